"""Hiera as a masked autoencoder (Ryali et al. 2023, arXiv 2306.00989): mask units, a light
decoder, pixel targets normalised per unit, a loss on the masked units only.

Mask units. A mask unit is the square of input pixels that becomes one token of the trunk's
last stage: `unit_px` = patch stride (4) x the product of the query-pooling strides (2 x 2 x 2
in every shipped config) = 32 px, i.e. 8 x 8 tokens of stage 1. Whole units are masked,
`round(ratio * units)` of them in every image (0.6 by default, the paper's ratio).

Masked units are *replaced*, not dropped. Hiera drops them: its "unroll" reorders stage-1
tokens so that every mask unit is a contiguous run that can be removed, and its windows are
formed in that order. segapp's trunk is the SAM 2 one: windows are cut from the full 2D grid
(with padding and the absolute-win position embedding tiled per window), and some blocks attend
globally over the whole grid, so it needs every token in place. Like SimMIM, a learned mask
token stands in for each patch token of a masked unit (`Hiera.forward(token_mask=...)`), and
the position embedding is added after, so the stand-in knows where it is. The pixels of masked
units are also set to 0 (the mean pixel, after normalisation) before the overlapping 7 x 7 patch
convolution, so no visible token sees into a masked unit. The price: the trunk computes over
masked tokens too (Hiera skips 60% of them); the stage-1 and stage-2 windows (8 and 4 tokens:
32 px) coincide with mask units, so there a masked unit's window holds mask tokens only, as if
it had been dropped.

Decoder (Hiera's multi-scale fusion, then a small transformer): each stage's map is reduced to
the last stage's grid by a strided convolution (kernel = stride = its resolution ratio) into
the decoder width, the maps are summed, a learned position embedding is added, `depth` global
attention blocks run over the unit grid, and a linear layer predicts the unit's pixels:
[B, units, unit_px * unit_px * 3].

Targets: the normalised input's pixels of each unit, in (y, x, channel) order, normalised by
the unit's own mean and variance (MAE's norm_pix_loss); loss: mean squared error over the
masked units only.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from segapp.modeling.hiera import Hiera, HieraBlock

# Variance floor of the per-unit target normalisation (as MAE's norm_pix_loss).
TARGET_NORM_EPS = 1e-6


def random_unit_mask(batch: int, grid: tuple[int, int], ratio: float, generator: torch.Generator,
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """[B, gh, gw] bool, True on masked units: exactly round(ratio * gh * gw) units per image
    (at least 1, at most all but 1), chosen uniformly by ranking random noise."""
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"mask ratio must be in (0, 1), got {ratio}")
    n = grid[0] * grid[1]
    if n < 2:
        raise ValueError(f"a grid of {grid[0]} x {grid[1]} mask units cannot be masked: use a larger image size")
    k = min(max(round(ratio * n), 1), n - 1)
    noise = torch.rand(batch, n, generator=generator, device=generator.device).to(device)
    ranks = noise.argsort(dim=1).argsort(dim=1)  # rank of each unit's noise in its row
    return (ranks < k).reshape(batch, *grid)


def expand_units(mask: torch.Tensor, size: int) -> torch.Tensor:
    """[B, gh, gw] unit mask -> [B, gh * size, gw * size]: each unit becomes a size x size block."""
    return mask.repeat_interleave(size, dim=1).repeat_interleave(size, dim=2)


def patchify(images: torch.Tensor, unit_px: int) -> torch.Tensor:
    """[B, 3, H, W] -> [B, (H/u) * (W/u), u * u * 3]: the pixels of each unit, row-major over
    units, each unit's pixels in (y, x, channel) order."""
    b, c, h, w = images.shape
    u = unit_px
    x = images.reshape(b, c, h // u, u, w // u, u)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // u) * (w // u), u * u * c)


def unit_targets(images: torch.Tensor, unit_px: int) -> torch.Tensor:
    """The reconstruction targets: `patchify`, each unit normalised by its own mean and variance."""
    patches = patchify(images, unit_px)
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)
    return (patches - mean) / (var + TARGET_NORM_EPS).sqrt()


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the masked units only. pred, target: [B, N, D]; mask: [B, N] bool."""
    per_unit = (pred.float() - target.float()).pow(2).mean(dim=-1)
    weights = mask.float()
    return (per_unit * weights).sum() / weights.sum().clamp(min=1.0)


class MaskedAutoencoder(nn.Module):
    """A Hiera trunk with a mask token and a light pixel decoder; see the module docstring.

    Args:
      trunk: the Hiera trunk to pretrain (shared, not copied: its weights are the result).
      image_size: input side in pixels, a multiple of the mask unit (32 px for the shipped trunks).
      decoder_dim, decoder_depth, decoder_heads: width, blocks and heads of the decoder.
    """

    def __init__(self, trunk: Hiera, image_size: int, decoder_dim: int = 256, decoder_depth: int = 2,
                 decoder_heads: int = 8) -> None:
        super().__init__()
        if decoder_dim % decoder_heads:
            raise ValueError(f"decoder_dim {decoder_dim} is not a multiple of decoder_heads {decoder_heads}")
        self.trunk = trunk
        self.patch_stride = int(trunk.patch_embed.proj.stride[0])
        pool = [b.q_stride for b in trunk.blocks if b.q_stride]
        self.unit_tokens = math.prod(s[0] for s in pool)  # stage-1 tokens per unit side
        self.unit_px = self.patch_stride * self.unit_tokens
        if image_size <= 0 or image_size % self.unit_px:
            raise ValueError(f"image size {image_size} is not a multiple of the {self.unit_px} px mask unit")
        self.image_size = image_size
        self.grid = (image_size // self.unit_px, image_size // self.unit_px)
        embed_dim = trunk.patch_embed.proj.out_channels
        self.mask_token = nn.Parameter(torch.zeros(embed_dim))
        # One reducer per stage: stage i's map is (unit_tokens / 2^pools-before-i) times finer.
        dims = [trunk.blocks[end].dim_out for end in trunk.stage_ends]
        self.fuse = nn.ModuleList()
        ratio = self.unit_tokens
        for i, dim in enumerate(dims):
            self.fuse.append(nn.Conv2d(dim, decoder_dim, kernel_size=ratio, stride=ratio))
            if i + 1 < len(dims) and trunk.blocks[trunk.stage_ends[i] + 1].q_stride:
                ratio //= trunk.blocks[trunk.stage_ends[i] + 1].q_stride[0]
        self.fuse_norm = nn.LayerNorm(decoder_dim, eps=1e-6)
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, *self.grid, decoder_dim))
        self.decoder = nn.ModuleList(
            HieraBlock(decoder_dim, decoder_dim, decoder_heads, window_size=0) for _ in range(decoder_depth))
        self.decoder_norm = nn.LayerNorm(decoder_dim, eps=1e-6)
        self.pred = nn.Linear(decoder_dim, self.unit_px * self.unit_px * 3)
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.decoder_pos_embed, std=0.02)

    def random_mask(self, batch: int, ratio: float, generator: torch.Generator) -> torch.Tensor:
        """[B, gh, gw] bool unit mask for this image size (see `random_unit_mask`)."""
        return random_unit_mask(batch, self.grid, ratio, generator, self.mask_token.device)

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """images: [B, 3, S, S] normalised; mask: [B, gh, gw] bool (True: masked) ->
        predicted pixels [B, gh * gw, unit_px * unit_px * 3] for every unit."""
        if tuple(mask.shape[1:]) != self.grid or images.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"expected {self.image_size} px images and a {self.grid} unit mask, got "
                             f"images {tuple(images.shape)} and mask {tuple(mask.shape)}")
        visible = ~expand_units(mask, self.unit_px)
        features = self.trunk(images * visible[:, None].to(images.dtype),
                              token_mask=expand_units(mask, self.unit_tokens), mask_token=self.mask_token)
        x = sum(fuse(f) for fuse, f in zip(self.fuse, features))  # [B, D, gh, gw]
        x = self.fuse_norm(x.permute(0, 2, 3, 1)) + self.decoder_pos_embed
        for block in self.decoder:
            x = block(x)
        x = self.pred(self.decoder_norm(x))
        return x.reshape(x.shape[0], -1, x.shape[-1])

    def loss(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The pretraining loss of a batch: masked-unit MSE against per-unit normalised pixels."""
        pred = self(images, mask)
        return masked_mse(pred, unit_targets(images, self.unit_px), mask.reshape(mask.shape[0], -1))
