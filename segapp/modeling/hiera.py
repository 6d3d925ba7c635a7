"""Hiera trunk: a hierarchical ViT with windowed attention and query pooling.

Tokens live on a 2D grid in [B, H, W, C] layout throughout. Stage i runs `stages[i]`
blocks; the first block of every later stage halves the grid by max-pooling the queries
(2x2) while doubling channels and heads, so the trunk yields four maps at strides
4, 8, 16 and 32 of the input. Most blocks attend inside non-overlapping windows; the
blocks listed in `global_att_blocks` attend over the whole grid.

References: Hiera (arXiv 2306.00989), "Window Attention is Bugged" (arXiv 2311.05613)
for the absolute-win position embedding used here.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from segapp.modeling.layers import MLP


def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Cut [B, H, W, C] into [B * nWindows, window, window, C], zero-padding H and W up to
    multiples of `window`. Returns the windows and the padded size (Hp, Wp)."""
    b, h, w, c = x.shape
    pad_h, pad_w = (-h) % window, (-w) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window, window, wp // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, c), (hp, wp)


def window_unpartition(
    windows: torch.Tensor, window: int, padded_hw: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    """Inverse of `window_partition`: [B * nWindows, window, window, C] -> [B, H, W, C]."""
    hp, wp = padded_hw
    h, w = hw
    b = windows.shape[0] // ((hp // window) * (wp // window))
    x = windows.reshape(b, hp // window, wp // window, window, window, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    if hp > h or wp > w:
        x = x[:, :h, :w].contiguous()
    return x


def max_pool_hw(x: torch.Tensor, stride: Sequence[int]) -> torch.Tensor:
    """2D max pooling of a channels-last map [B, H, W, C] (floor mode)."""
    x = F.max_pool2d(x.permute(0, 3, 1, 2), kernel_size=tuple(stride), stride=tuple(stride))
    return x.permute(0, 2, 3, 1)


class PatchEmbed(nn.Module):
    """Overlapping 7x7 stride-4 convolution from RGB to tokens: [B, 3, H, W] -> [B, H/4, W/4, C]."""

    def __init__(self, embed_dim: int, in_chans: int = 3, kernel_size: int = 7, stride: int = 4,
                 padding: int = 3) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size, stride, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class PooledAttention(nn.Module):
    """Multi-head self-attention whose queries may be max-pooled before attending.

    Pooling only the queries shrinks the output grid (stage transition) while every
    query still sees all keys of its window at the finer resolution.
    """

    def __init__(self, dim: int, dim_out: int, num_heads: int, q_stride: Sequence[int] | None) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_stride = tuple(q_stride) if q_stride else None
        self.qkv = nn.Linear(dim, dim_out * 3)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, H, W, dim] -> [B, H', W', dim_out] (H' = H / q_stride when pooling)."""
        b, h, w, _ = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1)
        q, k, v = qkv.unbind(2)  # each [B, HW, heads, head_dim]
        if self.q_stride:
            q = max_pool_hw(q.reshape(b, h, w, -1), self.q_stride)
            h, w = q.shape[1:3]
            q = q.reshape(b, h * w, self.num_heads, -1)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.proj(out.transpose(1, 2).reshape(b, h, w, -1))


class HieraBlock(nn.Module):
    """Pre-norm transformer block with (optionally windowed) pooled attention.

    `window_size` = 0 means global attention. When the block changes width it also
    projects (and pools) the shortcut, so the residual matches the attention output.
    """

    def __init__(
        self,
        dim: int,
        dim_out: int,
        num_heads: int,
        window_size: int,
        q_stride: Sequence[int] | None = None,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        self.dim, self.dim_out = dim, dim_out
        self.window_size = window_size
        self.q_stride = tuple(q_stride) if q_stride else None
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = PooledAttention(dim, dim_out, num_heads, self.q_stride)
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = MLP(dim_out, int(dim_out * mlp_ratio), dim_out, num_layers=2, activation="gelu")
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.dim != self.dim_out:
            shortcut = self.proj(x)
            if self.q_stride:
                shortcut = max_pool_hw(shortcut, self.q_stride)

        window = self.window_size
        if window > 0:
            x, padded = window_partition(x, window)
        x = self.attn(x)
        if window > 0:
            if self.q_stride:
                # Pooling shrank every window; the padded grid is recomputed for the pooled
                # size (as the official model does), which matters when it is not a multiple.
                window //= self.q_stride[0]
                h, w = shortcut.shape[1:3]
                padded = (h + (-h) % window, w + (-w) % window)
            x = window_unpartition(x, window, padded, shortcut.shape[1:3])

        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class Hiera(nn.Module):
    """The Hiera trunk. Returns the last block of each stage, finest first:
    [B, C, H/4, W/4], [B, 2C, H/8, W/8], [B, 4C, H/16, W/16], [B, 8C, H/32, W/32].

    Args (plain data, as in the configs):
      embed_dim, num_heads: width and heads of stage 1 (multiplied by dim_mul/head_mul at each stage).
      stages: blocks per stage. q_pool: how many stage transitions pool (from the first).
      window_spec: window size per stage. global_att_blocks: block indices with global attention.
      window_pos_embed_bkg_spatial_size: grid of the learned background position embedding.
    """

    def __init__(
        self,
        embed_dim: int = 96,
        num_heads: int = 1,
        stages: Sequence[int] = (2, 3, 16, 3),
        q_pool: int = 3,
        q_stride: Sequence[int] = (2, 2),
        dim_mul: float = 2.0,
        head_mul: float = 2.0,
        window_pos_embed_bkg_spatial_size: Sequence[int] = (14, 14),
        window_spec: Sequence[int] = (8, 4, 14, 7),
        global_att_blocks: Sequence[int] = (12, 16, 20),
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        if len(stages) != len(window_spec):
            raise ValueError(f"stages {list(stages)} and window_spec {list(window_spec)} differ in length")
        if not 0 <= q_pool < len(stages):
            raise ValueError(f"q_pool must be in [0, {len(stages) - 1}], got {q_pool}")
        self.window_spec = tuple(window_spec)
        self.stage_ends = [sum(stages[: i + 1]) - 1 for i in range(len(stages))]
        pool_blocks = {end + 1 for end in self.stage_ends[:q_pool]}
        global_blocks = set(global_att_blocks)

        self.patch_embed = PatchEmbed(embed_dim)
        # Absolute-win position embedding: a coarse "background" embedding, resized to the
        # token grid, plus one window-sized embedding repeated in every window of stage 1.
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, *window_pos_embed_bkg_spatial_size))
        self.pos_embed_window = nn.Parameter(torch.zeros(1, embed_dim, window_spec[0], window_spec[0]))
        # position_embedding's last result outside autograd, with copies of the parameters it
        # came from: (h, w, pos_embed copy, pos_embed_window copy, [1, h, w, C]).
        self._pos_cache: tuple[int, int, torch.Tensor, torch.Tensor, torch.Tensor] | None = None

        self.blocks = nn.ModuleList()
        dim, heads, stage = embed_dim, num_heads, 0
        for i in range(sum(stages)):
            # A stage's first block still sees the previous stage's grid, so it uses that
            # stage's window; its pooled output lives in the new stage's window.
            window = 0 if i in global_blocks else self.window_spec[stage]
            dim_out = dim
            if i - 1 in self.stage_ends:
                dim_out, heads, stage = int(dim * dim_mul), int(heads * head_mul), stage + 1
            self.blocks.append(
                HieraBlock(dim, dim_out, heads, window, q_stride if i in pool_blocks else None, mlp_ratio)
            )
            dim = dim_out
        self.channel_list = [self.blocks[i].dim_out for i in reversed(self.stage_ends)]

    def position_embedding(self, h: int, w: int) -> torch.Tensor:
        """[1, h, w, C] absolute-win embedding for an h x w token grid.

        The background is interpolated bicubically (as official checkpoints expect); the
        window embedding is tiled so that each window gets the same offsets. Grids that are
        not a whole number of windows get a cropped tile.

        Outside autograd (inference) the result is kept and reused while the grid size and both
        parameters stay the same: the bicubic resize is a few percent of a small model's pass.
        Copies of the (small) parameters are compared, not version counters, which a model
        built under torch.inference_mode does not have.
        """
        cache = self._pos_cache
        if torch.is_grad_enabled():
            self._pos_cache = None  # training: the result must carry gradients
        elif (cache is not None and cache[:2] == (h, w) and cache[4].device == self.pos_embed.device
              and cache[4].dtype == self.pos_embed.dtype and torch.equal(cache[2], self.pos_embed)
              and torch.equal(cache[3], self.pos_embed_window)):
            return cache[4]
        bkg = F.interpolate(self.pos_embed, size=(h, w), mode="bicubic")
        win = self.pos_embed_window
        reps = (-(-h // win.shape[-2]), -(-w // win.shape[-1]))
        tiled = win.tile(1, 1, *reps)[..., :h, :w]
        embedding = (bkg + tiled).permute(0, 2, 3, 1)
        if not torch.is_grad_enabled():
            self._pos_cache = (h, w, self.pos_embed.detach().clone(), self.pos_embed_window.detach().clone(),
                               embedding)
        return embedding

    def forward(
        self, x: torch.Tensor, token_mask: torch.Tensor | None = None, mask_token: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """x: [B, 3, H, W] normalised image -> four [B, C_i, H_i, W_i] maps, finest first.

        token_mask: [B, H/4, W/4] bool, True where the patch token is replaced by `mask_token`
        ([C]) before the position embedding is added, so a replaced token still knows where it
        is (masked-autoencoder pretraining: `segapp.training.mae`). None: no masking.
        """
        x = self.patch_embed(x)
        if token_mask is not None:
            if mask_token is None or token_mask.shape != x.shape[:3]:
                raise ValueError(f"token_mask must be {tuple(x.shape[:3])} with a mask_token, "
                                 f"got {tuple(token_mask.shape)}")
            x = torch.where(token_mask[..., None], mask_token.to(x.dtype), x)
        x = x + self.position_embedding(*x.shape[1:3])
        outputs = []
        ends = set(self.stage_ends)
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in ends:
                outputs.append(x.permute(0, 3, 1, 2))
        return outputs
