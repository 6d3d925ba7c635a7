"""Position encodings: 2D sine (neck, memory encoder) and random Fourier features (prompts)."""
from __future__ import annotations

import math

import torch
from torch import nn


class SinePositionEncoding(nn.Module):
    """DETR-style 2D sine/cosine encoding of a feature map's pixel grid.

    Half of the channels encode y, half encode x; within each half, channel pairs
    (2i, 2i+1) hold sin and cos of the coordinate divided by temperature^(2i/d). With
    `normalize`, coordinates 1..H are rescaled to (0, scale], so the encoding is the same
    for a given relative position whatever the map's size.

    Output: [B, num_pos_feats, H, W] for an input [B, C, H, W]; cached per (H, W, device).
    """

    def __init__(
        self,
        num_pos_feats: int,
        temperature: float = 10000.0,
        normalize: bool = True,
        scale: float | None = None,
    ) -> None:
        super().__init__()
        if num_pos_feats % 2:
            raise ValueError(f"num_pos_feats must be even, got {num_pos_feats}")
        if scale is not None and not normalize:
            raise ValueError("a scale only makes sense with normalize=True")
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale
        self._cache: dict[tuple, torch.Tensor] = {}

    def _frequencies(self, device) -> torch.Tensor:
        half = self.num_pos_feats // 2
        idx = torch.arange(half, dtype=torch.float32, device=device)
        return self.temperature ** (2 * torch.div(idx, 2, rounding_mode="floor") / half)

    def _interleave(self, pos: torch.Tensor) -> torch.Tensor:
        """[..., d] angles -> [..., d] with sin at even and cos at odd channels."""
        return torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1).flatten(-2)

    @torch.no_grad()
    def grid(self, height: int, width: int, device) -> torch.Tensor:
        """The [num_pos_feats, H, W] encoding of an H x W grid."""
        key = (height, width, str(device))
        if key not in self._cache:
            y = torch.arange(1, height + 1, dtype=torch.float32, device=device)
            x = torch.arange(1, width + 1, dtype=torch.float32, device=device)
            if self.normalize:
                eps = 1e-6
                y = y / (height + eps) * self.scale
                x = x / (width + eps) * self.scale
            freqs = self._frequencies(device)
            pos_y = self._interleave(y[:, None] / freqs)  # [H, d]
            pos_x = self._interleave(x[:, None] / freqs)  # [W, d]
            d = pos_y.shape[-1]
            pe = torch.cat(
                (pos_y[:, None, :].expand(height, width, d), pos_x[None, :, :].expand(height, width, d)),
                dim=-1,
            )
            self._cache[key] = pe.permute(2, 0, 1).contiguous()
        return self._cache[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pe = self.grid(x.shape[-2], x.shape[-1], x.device)
        return pe[None].expand(x.shape[0], -1, -1, -1).to(x.dtype)


class RandomFourierEncoding(nn.Module):
    """Encodes 2D positions with random spatial frequencies (SAM's prompt encoding).

    A fixed Gaussian matrix G [2, F] maps coordinates in [-1, 1] to angles 2π·xy·G; the
    encoding is [sin, cos] of them, 2F channels.
    """

    def __init__(self, num_pos_feats: int = 64, scale: float | None = None) -> None:
        super().__init__()
        scale = 1.0 if scale is None or scale <= 0 else scale
        self.register_buffer("positional_encoding_gaussian_matrix", scale * torch.randn(2, num_pos_feats))

    def encode(self, coords: torch.Tensor) -> torch.Tensor:
        """coords: [..., 2] xy normalised to [0, 1] -> [..., 2F]."""
        angles = 2 * math.pi * ((2 * coords - 1) @ self.positional_encoding_gaussian_matrix)
        return torch.cat((angles.sin(), angles.cos()), dim=-1)

    def grid(self, height: int, width: int) -> torch.Tensor:
        """[2F, H, W] encoding of pixel centres of an H x W grid."""
        device = self.positional_encoding_gaussian_matrix.device
        y = (torch.arange(height, dtype=torch.float32, device=device) + 0.5) / height
        x = (torch.arange(width, dtype=torch.float32, device=device) + 0.5) / width
        xy = torch.stack(torch.meshgrid(x, y, indexing="xy"), dim=-1)  # [H, W, 2]
        return self.encode(xy).permute(2, 0, 1)

    def encode_pixels(self, coords: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
        """coords: [B, N, 2] xy in pixels of an image of size image_hw -> [B, N, 2F]."""
        h, w = image_hw
        return self.encode(coords.float() / coords.new_tensor([float(w), float(h)]))
