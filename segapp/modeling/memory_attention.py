"""Memory attention: conditions the current frame's image tokens on memories of past frames.

A stack of pre-norm transformer layers. Each one lets the current frame's tokens attend to
each other (self-attention), then to the memory bank (cross-attention: spatial memories of
several frames followed by object-pointer tokens), then runs an MLP. Both attentions use
2D axial RoPE (see rope.py). Parameter names follow the official SAM 2 checkpoints, whose
keys sit under `memory_attention.`.

All tensors in and out of `MemoryAttention` are sequence-first, as in the reference:
    curr:   [L, B, C]  L = H * W tokens of the current frame, row-major, C = d_model
    memory: [M, B, Cm] M = frames * H * W memory tokens + object-pointer tokens, Cm = kv_in_dim
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from segapp.modeling.layers import activation_layer
from segapp.modeling.rope import AxialRoPE

# Scale of the current frame's position encoding when it is added to the tokens at the input.
INPUT_POS_SCALE = 0.1


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0, use_sdpa: bool = True
) -> torch.Tensor:
    """softmax(q kᵀ / sqrt(D)) v for [B, heads, N, D] tensors.

    `use_sdpa` picks torch's fused kernel; the plain formulation is the readable fallback.
    """
    if use_sdpa:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    weights = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(dim=-1)
    if dropout_p > 0:
        weights = F.dropout(weights, dropout_p)
    return weights @ v


class RoPEAttention(nn.Module):
    """Multi-head attention with 2D axial RoPE on queries and keys.

    Queries, keys and values are projected to internal_dim = embedding_dim // downsample_rate
    channels; keys and values come from kv_in_dim channels (embedding_dim by default, the
    memory's width for cross-attention). With `rope_k_repeat` the keys may hold several
    copies of the query grid (memory frames); the last `num_k_exclude_rope` keys are never
    rotated.
    """

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        downsample_rate: int = 1,
        dropout: float = 0.0,
        kv_in_dim: int | None = None,
        rope_theta: float = 10000.0,
        rope_k_repeat: bool = False,
        use_sdpa: bool = True,
    ) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.kv_in_dim = embedding_dim if kv_in_dim is None else kv_in_dim
        self.internal_dim = embedding_dim // downsample_rate
        if self.internal_dim % num_heads:
            raise ValueError(f"{num_heads} heads do not divide the internal dim {self.internal_dim}")
        self.num_heads = num_heads
        self.dropout_p = dropout
        self.use_sdpa = use_sdpa

        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(self.kv_in_dim, self.internal_dim)
        self.v_proj = nn.Linear(self.kv_in_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)
        self.rope = AxialRoPE(self.internal_dim // num_heads, theta=rope_theta, repeat_k=rope_k_repeat)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """[B, N, heads * D] -> [B, heads, N, D]."""
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        num_k_exclude_rope: int = 0,
        grid_hw: tuple[int, int] | None = None,
        kernel_dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """q: [B, Nq, embedding_dim]; k, v: [B, Nk, kv_in_dim] -> [B, Nq, embedding_dim].

        grid_hw: (H, W) of the query grid, H * W = Nq; square when omitted.
        kernel_dtype: run softmax(q kᵀ) v itself in this dtype (e.g. bfloat16), after the
            projections and rotations in the input dtype; the output is back in the input dtype.
        """
        q = self._split_heads(self.q_proj(q))
        k = self._split_heads(self.k_proj(k))
        v = self._split_heads(self.v_proj(v))
        # k is this call's own projection, so the rotation may be written into it.
        q, k = self.rope(q, k, grid_hw=grid_hw, num_k_exclude=num_k_exclude_rope, overwrite_k=True)
        dtype = q.dtype
        if kernel_dtype is not None and kernel_dtype != dtype:
            q, k, v = q.to(kernel_dtype), k.to(kernel_dtype), v.to(kernel_dtype)
        out = attention(q, k, v, self.dropout_p if self.training else 0.0, self.use_sdpa).to(dtype)
        return self.out_proj(out.transpose(1, 2).flatten(2))


class MemoryAttentionLayer(nn.Module):
    """Pre-norm layer: RoPE self-attention, RoPE cross-attention to memory, MLP.

    Position encodings are added where the flags say: to the self-attention queries and keys
    (pos_enc_at_attn), to the cross-attention queries (pos_enc_at_cross_attn_queries) and to
    the memory keys (pos_enc_at_cross_attn_keys). Values never carry them. `dropout` applies
    inside both attentions, in the MLP and on each residual branch.
    """

    def __init__(
        self,
        d_model: int = 256,
        kv_in_dim: int = 64,
        num_heads: int = 1,
        downsample_rate: int = 1,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
        rope_theta: float = 10000.0,
        pos_enc_at_attn: bool = False,
        pos_enc_at_cross_attn_keys: bool = True,
        pos_enc_at_cross_attn_queries: bool = False,
        use_sdpa: bool = True,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.pos_enc_at_attn = pos_enc_at_attn
        self.pos_enc_at_cross_attn_keys = pos_enc_at_cross_attn_keys
        self.pos_enc_at_cross_attn_queries = pos_enc_at_cross_attn_queries

        attn_args = dict(num_heads=num_heads, downsample_rate=downsample_rate, dropout=dropout,
                         rope_theta=rope_theta, use_sdpa=use_sdpa)
        self.self_attn = RoPEAttention(d_model, **attn_args)
        self.cross_attn_image = RoPEAttention(d_model, kv_in_dim=kv_in_dim, rope_k_repeat=True, **attn_args)

        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.activation = activation_layer(activation)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)

        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    @staticmethod
    def _with_pos(x: torch.Tensor, pos: torch.Tensor | None, enabled: bool) -> torch.Tensor:
        return x + pos if enabled and pos is not None else x

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        pos: torch.Tensor | None = None,
        query_pos: torch.Tensor | None = None,
        num_k_exclude_rope: int = 0,
        grid_hw: tuple[int, int] | None = None,
        kernel_dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """Batch-first. tgt, query_pos: [B, L, d_model]; memory, pos: [B, M, kv_in_dim].

        num_k_exclude_rope: how many trailing memory tokens (object pointers) skip RoPE.
        kernel_dtype: dtype of the cross-attention kernel (see RoPEAttention.forward).
        """
        tgt = self.self_attention_block(tgt, query_pos, grid_hw)
        return self.cross_attention_block(tgt, memory, pos, query_pos, num_k_exclude_rope, grid_hw, kernel_dtype)

    def self_attention_block(self, tgt: torch.Tensor, query_pos: torch.Tensor | None,
                             grid_hw: tuple[int, int] | None) -> torch.Tensor:
        """The first half of the layer: pre-norm self-attention with its residual."""
        x = self.norm1(tgt)
        qk = self._with_pos(x, query_pos, self.pos_enc_at_attn)
        return tgt + self.dropout1(self.self_attn(qk, qk, x, grid_hw=grid_hw))

    def cross_attention_block(self, tgt: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor | None,
                              query_pos: torch.Tensor | None, num_k_exclude_rope: int,
                              grid_hw: tuple[int, int] | None, kernel_dtype: torch.dtype | None = None
                              ) -> torch.Tensor:
        """The second half: pre-norm cross-attention to memory, then the MLP, with residuals."""
        x = self.norm2(tgt)
        x = self.cross_attn_image(
            q=self._with_pos(x, query_pos, self.pos_enc_at_cross_attn_queries),
            k=self._with_pos(memory, pos, self.pos_enc_at_cross_attn_keys),
            v=memory,
            num_k_exclude_rope=num_k_exclude_rope,
            grid_hw=grid_hw,
            kernel_dtype=kernel_dtype,
        )
        tgt = tgt + self.dropout2(x)

        x = self.linear2(self.dropout(self.activation(self.linear1(self.norm3(tgt)))))
        return tgt + self.dropout3(x)


class MemoryAttention(nn.Module):
    """`num_layers` MemoryAttentionLayers and a final LayerNorm.

    Args:
      d_model: width of the current frame's tokens; kv_in_dim: width of the memory.
      num_layers: how many layers, all built with the same arguments.
      pos_enc_at_input: add INPUT_POS_SCALE times the current frame's position encoding to
        its tokens before the first layer.
      reuse_broadcast_frame: fast path, at inference with a batch of several objects. When the
        current frame's tokens and their position encoding are one row broadcast over the
        batch (batch stride 0, as `expand` makes them when several objects are tracked on one
        frame; only the layout is checked), everything before the memory is first read is the
        same for every object: the input position term and the first layer's self-attention
        then run once and are broadcast. False: always the plain per-row path (same outputs).
      per_object_on_cpu: fast path, at inference on CPU with a batch of several objects: run
        the layers one object at a time. Each object's memory (several frames of keys and
        values) then stays in cache longer, about 8% faster than the batch at 1024 px; every
        row is independent, so the outputs are those of the batch. False: the whole batch.
      **layer_args: the other MemoryAttentionLayer arguments (num_heads, downsample_rate,
        dim_feedforward, dropout, activation, rope_theta, pos_enc_at_attn,
        pos_enc_at_cross_attn_keys, pos_enc_at_cross_attn_queries, use_sdpa), given flat and
        passed to every layer; their defaults are those of MemoryAttentionLayer, the values of
        every official SAM 2 / 2.1 config. An unknown name is a TypeError naming it.
    """

    def __init__(
        self,
        d_model: int = 256,
        num_layers: int = 4,
        pos_enc_at_input: bool = True,
        kv_in_dim: int = 64,
        reuse_broadcast_frame: bool = True,
        per_object_on_cpu: bool = True,
        **layer_args,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.kv_in_dim = kv_in_dim
        self.num_layers = num_layers
        self.pos_enc_at_input = pos_enc_at_input
        self.reuse_broadcast_frame = reuse_broadcast_frame
        self.per_object_on_cpu = per_object_on_cpu
        self.layers = nn.ModuleList(
            MemoryAttentionLayer(d_model=d_model, kv_in_dim=kv_in_dim, **layer_args) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)

    def forward(
        self,
        curr: torch.Tensor,
        memory: torch.Tensor,
        curr_pos: torch.Tensor | None = None,
        memory_pos: torch.Tensor | None = None,
        num_obj_ptr_tokens: int = 0,
        grid_hw: tuple[int, int] | None = None,
        kernel_dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """Sequence-first, as the reference.

        curr, curr_pos: [L, B, d_model], the current frame's H * W tokens (row-major).
        memory, memory_pos: [M, B, kv_in_dim]; the last `num_obj_ptr_tokens` are object
            pointers, the rest a whole number of H x W memory grids.
        grid_hw: (H, W); a square grid is assumed when omitted.
        kernel_dtype: run the cross-attention kernels (softmax(q kᵀ) v over the memory, most
            of the work on long memories) in this dtype, e.g. torch.bfloat16; None: as the input.
        Returns: [L, B, d_model].
        """
        if curr.shape[1] != memory.shape[1]:
            raise ValueError(f"batch sizes differ: {curr.shape[1]} current vs {memory.shape[1]} memory")
        if curr.shape[-1] != self.d_model or memory.shape[-1] != self.kv_in_dim:
            raise ValueError(
                f"expected {self.d_model} current and {self.kv_in_dim} memory channels, "
                f"got {curr.shape[-1]} and {memory.shape[-1]}"
            )
        batch = curr.shape[1]
        # Objects tracked on one frame start from the same frame features (a broadcast batch).
        shared = (self.reuse_broadcast_frame and batch > 1 and not self.training and len(self.layers) > 0
                  and _broadcast_batch(curr) and _broadcast_batch(curr_pos))
        if self.pos_enc_at_input and curr_pos is not None:
            if shared:
                curr = (curr[:, :1] + INPUT_POS_SCALE * curr_pos[:, :1]).expand(-1, batch, -1)
            else:
                curr = curr + INPUT_POS_SCALE * curr_pos

        def batch_first(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x.transpose(0, 1)

        out, curr_pos = batch_first(curr), batch_first(curr_pos)
        memory, memory_pos = batch_first(memory), batch_first(memory_pos)
        layers = list(self.layers)
        first = None
        if shared:
            # The first layer's self-attention is then the same for every object: it runs
            # once, and only the memory-dependent rest of that layer runs per object.
            first = layers.pop(0)
            out = first.self_attention_block(out[:1], None if curr_pos is None else curr_pos[:1], grid_hw)
            out = out.expand(batch, -1, -1)

        def run(rows: slice) -> torch.Tensor:
            x, mem = out[rows], memory[rows]
            mem_pos = None if memory_pos is None else memory_pos[rows]
            pos = None if curr_pos is None else curr_pos[rows]
            if first is not None:
                x = first.cross_attention_block(x, mem, mem_pos, pos, num_obj_ptr_tokens, grid_hw, kernel_dtype)
            for layer in layers:
                x = layer(x, mem, pos=mem_pos, query_pos=pos, num_k_exclude_rope=num_obj_ptr_tokens,
                          grid_hw=grid_hw, kernel_dtype=kernel_dtype)
            return x

        if self.per_object_on_cpu and batch > 1 and not self.training and out.device.type == "cpu":
            # See per_object_on_cpu in the class docstring.
            out = torch.cat([run(slice(i, i + 1)) for i in range(batch)])
        else:
            out = run(slice(None))
        return self.norm(out).transpose(0, 1)


def _broadcast_batch(x: torch.Tensor | None) -> bool:
    """Whether a sequence-first [L, B, C] tensor is one row broadcast over the batch (batch
    stride 0, as `expand` makes it), so that work on it can be done once per frame. Only the
    layout is checked, never the values."""
    return x is None or x.stride(1) == 0
