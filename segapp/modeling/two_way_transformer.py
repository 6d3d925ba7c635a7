"""Two-way transformer of the mask decoder: prompt tokens and image tokens attend to each other."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segapp.modeling.layers import MLP


class Attention(nn.Module):
    """Multi-head attention with an optional narrower inner width (embedding_dim / downsample_rate).

    q: [B, Nq, C]; k, v: [B, Nk, kv_in_dim] -> [B, Nq, C].
    """

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1, dropout: float = 0.0,
                 kv_in_dim: int | None = None) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.kv_in_dim = kv_in_dim or embedding_dim
        self.internal_dim = embedding_dim // downsample_rate
        if self.internal_dim % num_heads:
            raise ValueError(f"{num_heads} heads do not divide the inner width {self.internal_dim}")
        self.num_heads = num_heads
        self.dropout_p = dropout
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(self.kv_in_dim, self.internal_dim)
        self.v_proj = nn.Linear(self.kv_in_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, h, n, d = x.shape
        return x.transpose(1, 2).reshape(b, n, h * d)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Heads already split: q [Bq, heads, Nq, d], k and v [Bk, heads, Nk, d].

        Bq and Bk may differ when one side is shared by every prompt (batch 1): shared keys
        are attended by all prompts' queries at once, folded into one sequence (each query
        row is independent, so this is exact); a shared query grid is broadcast.
        """
        dropout = self.dropout_p if self.training else 0.0
        bq, bk = q.shape[0], k.shape[0]
        if bq != bk and bk == 1:
            _, heads, n, d = q.shape
            folded = q.transpose(0, 1).reshape(1, heads, bq * n, d)
            out = F.scaled_dot_product_attention(folded, k, v, dropout_p=dropout)
            out = out.reshape(heads, bq, n, d).transpose(0, 1)
        else:
            if bq != bk and bq == 1:
                q = q.expand(bk, -1, -1, -1)
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        return self.out_proj(self.merge_heads(out))

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.attend(self.split_heads(self.q_proj(q)), self.split_heads(self.k_proj(k)),
                           self.split_heads(self.v_proj(v)))


class TwoWayAttentionBlock(nn.Module):
    """Token self-attention, token->image cross-attention, token MLP, image->token cross-attention.

    Position encodings are re-added to queries and keys at every attention (not to values);
    the first block's self-attention sees the raw prompt embeddings, which already are
    position encodings.
    """

    def __init__(self, embedding_dim: int, num_heads: int, mlp_dim: int, activation: str = "relu",
                 attention_downsample_rate: int = 2, skip_first_layer_pe: bool = False) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLP(embedding_dim, mlp_dim, embedding_dim, num_layers=2, activation=activation)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(self, queries, keys, query_pe, key_pe):
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)

        k = keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(queries + query_pe, k, keys))
        queries = self.norm3(queries + self.mlp(queries))
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, queries + query_pe, queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """`depth` two-way blocks and a final token->image attention.

    image_embedding: [B or 1, C, h, w]; image_pe: [B or 1, C, h, w]; point_embedding: [B, N, C].
    An image embedding of batch 1 is shared by all B prompts: the first block computes its
    image-side projections once instead of once per prompt (the image tokens only start to
    differ between prompts when they attend to the prompt tokens).
    Returns (tokens [B, N, C], image tokens [B, h*w, C]).
    """

    def __init__(self, depth: int, embedding_dim: int, num_heads: int, mlp_dim: int,
                 activation: str = "relu", attention_downsample_rate: int = 2) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(embedding_dim, num_heads, mlp_dim, activation, attention_downsample_rate,
                                 skip_first_layer_pe=i == 0)
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(self, image_embedding, image_pe, point_embedding):
        keys = image_embedding.flatten(2).transpose(1, 2)
        key_pe = image_pe.flatten(2).transpose(1, 2)
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries, keys, point_embedding, key_pe)
        attn = self.final_attn_token_to_image(queries + point_embedding, keys + key_pe, keys)
        return self.norm_final_attn(queries + attn), keys
