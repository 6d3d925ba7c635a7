"""Image encoder: trunk + neck, minus the coarsest level(s) ("scalp")."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class BackboneOutput:
    """Multi-scale image features, finest first.

    backbone_fpn: list of [B, d_model, H_i, W_i] (strides 4, 8, 16 for SAM 2).
    vision_pos_enc: matching sine position encodings.
    """

    backbone_fpn: list[torch.Tensor]
    vision_pos_enc: list[torch.Tensor]

    @property
    def vision_features(self) -> torch.Tensor:
        """The coarsest kept level: the embedding the mask decoder attends to."""
        return self.backbone_fpn[-1]


class ImageEncoder(nn.Module):
    """Runs the trunk and the neck; drops the `scalp` coarsest levels (SAM 2 drops stride 32)."""

    def __init__(self, trunk: nn.Module, neck: nn.Module, scalp: int = 0) -> None:
        super().__init__()
        if list(trunk.channel_list) != list(neck.backbone_channel_list):
            raise ValueError(
                f"trunk channels {list(trunk.channel_list)} do not match the neck's "
                f"backbone_channel_list {list(neck.backbone_channel_list)}"
            )
        self.trunk = trunk
        self.neck = neck
        self.scalp = scalp

    def forward(self, images: torch.Tensor) -> BackboneOutput:
        features, positions = self.neck(self.trunk(images))
        if self.scalp > 0:
            features, positions = features[: -self.scalp], positions[: -self.scalp]
        return BackboneOutput(backbone_fpn=features, vision_pos_enc=positions)
