"""FPN neck: projects the trunk's four maps to a common width and fuses them top-down."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from segapp.modeling.position_encoding import SinePositionEncoding


class FpnNeck(nn.Module):
    """Lateral 1x1 convolutions to `d_model`, plus top-down fusion at `fpn_top_down_levels`.

    Level i is the trunk's i-th map (finest first). At a top-down level the coarser fused
    map is upsampled 2x (`fpn_interp_model`) and added (or averaged, `fuse_type`) to the
    lateral; at the other levels the lateral is used as it is. SAM 2 fuses only the two
    coarsest levels; the fine levels feed the mask decoder's skip connections directly.
    Unlike the classic FPN there is no output convolution.

    Inputs: four maps [B, backbone_channel_list[::-1][i], H_i, W_i].
    Outputs: (features, position encodings), each a list of four [B, d_model, H_i, W_i].
    """

    def __init__(
        self,
        d_model: int,
        backbone_channel_list: Sequence[int],
        fpn_top_down_levels: Sequence[int] | None = None,
        fpn_interp_model: str = "bilinear",
        fuse_type: str = "sum",
        pos_temperature: float = 10000.0,
    ) -> None:
        super().__init__()
        if fuse_type not in ("sum", "avg"):
            raise ValueError(f"fuse_type must be 'sum' or 'avg', got {fuse_type!r}")
        self.d_model = d_model
        self.backbone_channel_list = list(backbone_channel_list)
        self.position_encoding = SinePositionEncoding(d_model, temperature=pos_temperature)
        # convs[j] serves backbone_channel_list[j], i.e. the coarsest map first (official order).
        self.convs = nn.ModuleList()
        for dim in self.backbone_channel_list:
            lateral = nn.Sequential()
            lateral.add_module("conv", nn.Conv2d(dim, d_model, kernel_size=1))
            self.convs.append(lateral)
        levels = range(len(self.convs)) if fpn_top_down_levels is None else fpn_top_down_levels
        self.fpn_top_down_levels = set(levels)
        self.fpn_interp_model = fpn_interp_model
        self.fuse_type = fuse_type

    def forward(self, xs: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        n = len(self.convs)
        if len(xs) != n:
            raise ValueError(f"the neck expects {n} feature maps, got {len(xs)}")
        features: list[torch.Tensor] = [None] * n  # type: ignore[list-item]
        coarser = None
        for i in reversed(range(n)):
            fused = self.convs[n - 1 - i](xs[i])
            if coarser is not None and i in self.fpn_top_down_levels:
                up = F.interpolate(
                    coarser.float(),
                    scale_factor=2.0,
                    mode=self.fpn_interp_model,
                    align_corners=None if self.fpn_interp_model == "nearest" else False,
                )
                fused = fused + up
                if self.fuse_type == "avg":
                    fused = fused / 2
            features[i] = coarser = fused
        positions = [self.position_encoding(f) for f in features]
        return features, positions
