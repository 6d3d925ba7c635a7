"""Memory encoder: turns a frame's image features and its predicted mask into a memory.

The mask (at image resolution) is shrunk to the feature map's resolution by strided convs,
added to a 1x1 projection of the image features, mixed by a few ConvNeXt blocks and projected
to the narrower memory width. The memory gets a 2D sine position encoding of the same width.
Parameter names follow the official SAM 2 checkpoints (keys under `memory_encoder.`).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from segapp.modeling.layers import LayerNorm2d, activation_layer
from segapp.modeling.position_encoding import SinePositionEncoding


class MaskDownSampler(nn.Module):
    """Shrinks a [B, 1, H, W] mask by `total_stride` into a [B, embed_dim, H/s, W/s] map.

    Each stage is a conv of stride `stride`, a per-pixel LayerNorm and an activation, and
    multiplies the channels by stride² so that no stage loses capacity as pixels are folded
    together (1 -> 4 -> 16 -> 64 -> 256 for four stride-2 stages); a final 1x1 conv maps to
    embed_dim. Stored as one Sequential, `encoder.{i}`, like the official checkpoints.
    """

    def __init__(
        self,
        embed_dim: int = 256,
        kernel_size: int = 4,
        stride: int = 4,
        padding: int = 0,
        total_stride: int = 16,
        activation: str = "gelu",
    ) -> None:
        super().__init__()
        num_stages = round(math.log(total_stride, stride))
        if stride**num_stages != total_stride:
            raise ValueError(f"total_stride {total_stride} is not a power of stride {stride}")
        self.total_stride = total_stride
        stages: list[nn.Module] = []
        channels = 1
        for _ in range(num_stages):
            out_channels = channels * stride**2
            stages += [
                nn.Conv2d(channels, out_channels, kernel_size, stride=stride, padding=padding),
                LayerNorm2d(out_channels),
                activation_layer(activation),
            ]
            channels = out_channels
        stages.append(nn.Conv2d(channels, embed_dim, kernel_size=1))
        self.encoder = nn.Sequential(*stages)

    def forward(self, masks: torch.Tensor) -> torch.Tensor:
        return self.encoder(masks)


class CXBlock(nn.Module):
    """ConvNeXt block: x + gamma * pwconv2(GELU(pwconv1(LayerNorm(dwconv(x))))).

    The 1x1 convs are Linear layers applied channels-last. `gamma` (layer scale) starts at
    layer_scale_init_value so each block starts close to the identity; with a value <= 0
    there is no layer scale (and no `gamma` parameter).
    """

    def __init__(
        self,
        dim: int,
        kernel_size: int = 7,
        padding: int = 3,
        layer_scale_init_value: float = 1e-6,
        use_dwconv: bool = True,
    ) -> None:
        super().__init__()
        groups = dim if use_dwconv else 1
        self.dwconv = nn.Conv2d(dim, dim, kernel_size, padding=padding, groups=groups)
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        if layer_scale_init_value > 0:
            self.gamma = nn.Parameter(torch.full((dim,), float(layer_scale_init_value)))
        else:
            self.gamma = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, dim, H, W] -> [B, dim, H, W]."""
        y = self.norm(self.dwconv(x)).permute(0, 2, 3, 1)
        y = self.pwconv2(self.act(self.pwconv1(y)))
        if self.gamma is not None:
            y = y * self.gamma
        return x + y.permute(0, 3, 1, 2)


class Fuser(nn.Module):
    """`num_layers` CXBlocks in sequence, stored as `layers.{i}`; `block_args` (kernel_size,
    padding, layer_scale_init_value, use_dwconv) go to every block, CXBlock's defaults otherwise."""

    def __init__(self, dim: int, num_layers: int = 2, **block_args) -> None:
        super().__init__()
        self.layers = nn.ModuleList(CXBlock(dim, **block_args) for _ in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class MemoryEncoding(NamedTuple):
    """Output of MemoryEncoder; unpacks as (vision_features, vision_pos_enc)."""

    vision_features: torch.Tensor  # [B, out_dim, h, w]
    vision_pos_enc: torch.Tensor  # [B, out_dim, h, w]


class MemoryEncoder(nn.Module):
    """Encodes (image features, mask) of a frame into an out_dim-wide memory.

    Flat plain-data arguments; the defaults are the values of every official SAM 2 / 2.1
    config. The mask downsampler's output width and the fuser's width are in_dim (the mask
    map is added to the projected image features); the position encoding is out_dim wide
    (it is added to the memory). `out_proj` is a 1x1 conv, or the identity (no parameters)
    when out_dim == in_dim.

    reuse_broadcast_frame: fast path for several objects on one frame. When the image features
    are one frame broadcast over the batch (batch stride 0, as `expand` makes them; only the
    layout is checked), their 1x1 projection runs once and is broadcast to every object's
    mask map. False: always project every row (same outputs).
    """

    def __init__(
        self,
        out_dim: int = 64,
        in_dim: int = 256,
        downsampler_kernel_size: int = 3,
        downsampler_stride: int = 2,
        downsampler_padding: int = 1,
        downsampler_total_stride: int = 16,
        fuser_num_layers: int = 2,
        fuser_kernel_size: int = 7,
        fuser_padding: int = 3,
        layer_scale_init_value: float = 1e-6,
        use_dwconv: bool = True,
        pos_temperature: float = 10000.0,
        reuse_broadcast_frame: bool = True,
    ) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.reuse_broadcast_frame = reuse_broadcast_frame
        self.mask_downsampler = MaskDownSampler(
            embed_dim=in_dim,
            kernel_size=downsampler_kernel_size,
            stride=downsampler_stride,
            padding=downsampler_padding,
            total_stride=downsampler_total_stride,
        )
        self.pix_feat_proj = nn.Conv2d(in_dim, in_dim, kernel_size=1)
        self.fuser = Fuser(
            in_dim,
            num_layers=fuser_num_layers,
            kernel_size=fuser_kernel_size,
            padding=fuser_padding,
            layer_scale_init_value=layer_scale_init_value,
            use_dwconv=use_dwconv,
        )
        self.out_proj = nn.Identity() if out_dim == in_dim else nn.Conv2d(in_dim, out_dim, kernel_size=1)
        self.position_encoding = SinePositionEncoding(out_dim, temperature=pos_temperature, normalize=True)

    def forward(
        self, pix_feat: torch.Tensor, masks: torch.Tensor, skip_mask_sigmoid: bool = False
    ) -> MemoryEncoding:
        """pix_feat: [B, in_dim, h, w] image features; masks: [B, 1, h * s, w * s] mask logits
        (s = downsampler_total_stride), or probabilities / binary masks with skip_mask_sigmoid.

        Returns MemoryEncoding(vision_features, vision_pos_enc), both [B, out_dim, h, w].
        """
        # Logits go through a sigmoid so that predicted masks look like the {0, 1} masks
        # that user-provided masks are fed as.
        if not skip_mask_sigmoid:
            masks = masks.sigmoid()
        mask_map = self.mask_downsampler(masks)
        if mask_map.shape[-2:] != pix_feat.shape[-2:]:
            raise ValueError(
                f"masks of size {tuple(masks.shape[-2:])} shrink to {tuple(mask_map.shape[-2:])}, "
                f"not to the feature map's {tuple(pix_feat.shape[-2:])}"
            )
        if self.reuse_broadcast_frame and pix_feat.shape[0] > 1 and pix_feat.stride(0) == 0:
            # One frame's features broadcast over several objects: project them once.
            projected = self.pix_feat_proj(pix_feat[:1])
        else:
            projected = self.pix_feat_proj(pix_feat)
        x = self.out_proj(self.fuser(projected + mask_map))
        return MemoryEncoding(x, self.position_encoding(x).to(x.dtype))
