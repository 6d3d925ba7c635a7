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

    # Factorised forms for a few prompt tokens against many per-prompt image tokens. The
    # projections of the image tokens (the bulk of the decoder's arithmetic: [N, C] x [C, C/2]
    # per prompt and projection) are folded into the few token-side vectors instead, which
    # is the same attention with about half the multiply-adds:
    #   q_h . (W_k,h x + b_k,h) = (W_k,h^T q_h) . x + const  (a per-query constant drops out of softmax)
    #   sum_n a_n (W_v,h x_n + b_v,h) = W_v,h (sum_n a_n x_n) + b_v,h  (attention weights sum to 1)
    def tokens_to_image(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Same as forward for q [B, T, C] (few queries) and k, v [B, N, kv_in_dim] (many keys)."""
        b, t, _ = q.shape
        heads, d = self.num_heads, self.internal_dim // self.num_heads
        qh = self.q_proj(q).view(b, t, heads, d).transpose(1, 2) * d ** -0.5  # [B, H, T, d]
        g = (qh @ self.k_proj.weight.view(heads, d, -1)).reshape(b, heads * t, -1)  # [B, H*T, Ckv]
        attn = torch.bmm(g, k.transpose(1, 2)).softmax(dim=-1)  # [B, H*T, N]
        mixed = torch.bmm(attn, v).view(b, heads, t, -1)  # [B, H, T, Ckv]
        out = mixed @ self.v_proj.weight.view(heads, d, -1).transpose(1, 2) + self.v_proj.bias.view(heads, 1, d)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, self.internal_dim))

    def image_to_tokens(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        residual: torch.Tensor) -> torch.Tensor:
        """residual + forward(q, k, v) for q [1 or B, N, C] (many queries, batch 1 when shared by
        every prompt) and k, v [B, T, kv_in_dim] (few keys); residual [1 or B, N, C]."""
        b, t, _ = k.shape
        n, c = q.shape[1], q.shape[2]
        heads, d = self.num_heads, self.internal_dim // self.num_heads
        kh = self.k_proj(k).view(b, t, heads, d) * d ** -0.5
        vh = self.v_proj(v).view(b, t, heads, d)
        # Scores x . (W_q,h^T k_h) + b_q,h . k_h with x the image tokens: [B, C, H*T] and [B, 1, H*T].
        proj = torch.einsum("hec,bthe->bcht", self.q_proj.weight.view(heads, d, c), kh).reshape(b, c, heads * t)
        const = torch.einsum("he,bthe->bht", self.q_proj.bias.view(heads, d), kh).reshape(b, 1, heads * t)
        # Values through the output projection: [B, H*T, C]; each head's weights sum to 1, so
        # the output bias is spread over the heads.
        values = torch.einsum("bthe,che->bhtc", vh, self.out_proj.weight.view(c, heads, d)).reshape(b, heads * t, c)
        values = values + self.out_proj.bias / heads
        if q.shape[0] == 1 and b > 1:
            # One matrix product for every prompt: [N, C] x [C, B*H*T].
            scores = torch.addmm(const.reshape(1, b * heads * t), q[0], proj.transpose(0, 1).reshape(c, b * heads * t))
            attn = scores.view(n, b * heads, t).softmax(dim=-1).view(n, b, heads * t).transpose(0, 1)
        else:
            attn = torch.baddbmm(const, q, proj).view(-1, n, heads, t).softmax(dim=-1).view(-1, n, heads * t)
        return torch.baddbmm(residual.expand(b, n, c), attn, values)


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

    def forward(self, queries, keys, query_pe, key_pe, factorized: bool = False):
        """factorized: use the attentions' factorised forms (see Attention.tokens_to_image), for
        many prompts at inference."""
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)

        k = keys + key_pe
        if factorized and keys.shape[0] == queries.shape[0]:
            attn = self.cross_attn_token_to_image.tokens_to_image(queries + query_pe, k, keys)
        else:  # shared image tokens: their projections are computed once for all prompts
            attn = self.cross_attn_token_to_image(queries + query_pe, k, keys)
        queries = self.norm2(queries + attn)
        queries = self.norm3(queries + self.mlp(queries))
        if factorized:
            keys = self.norm4(self.cross_attn_image_to_token.image_to_tokens(k, queries + query_pe, queries, keys))
        else:
            keys = self.norm4(keys + self.cross_attn_image_to_token(k, queries + query_pe, queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """`depth` two-way blocks and a final token->image attention.

    image_embedding: [B or 1, C, h, w]; image_pe: [B or 1, C, h, w]; point_embedding: [B, N, C].
    An image embedding of batch 1 is shared by all B prompts: the first block computes its
    image-side projections once instead of once per prompt (the image tokens only start to
    differ between prompts when they attend to the prompt tokens).
    Returns (tokens [B, N, C], image tokens [B, h*w, C]).

    factorized_attention: fast path, at inference with one shared image embedding (batch 1)
    and several prompts: the cross-attentions use their factorised forms
    (Attention.tokens_to_image and image_to_tokens), which fold the projections of the many
    image tokens into the few token-side vectors, about half the arithmetic per prompt. The
    same attention up to float rounding; False: always the plain attentions.
    """

    def __init__(self, depth: int, embedding_dim: int, num_heads: int, mlp_dim: int,
                 activation: str = "relu", attention_downsample_rate: int = 2,
                 factorized_attention: bool = True) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.factorized_attention = factorized_attention
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
        # Many prompts on one image at inference: see factorized_attention in the class docstring.
        factorized = (self.factorized_attention and not self.training and image_embedding.shape[0] == 1
                      and point_embedding.shape[0] > 1)
        for layer in self.layers:
            queries, keys = layer(queries, keys, point_embedding, key_pe, factorized)
        if factorized and keys.shape[0] == queries.shape[0]:
            attn = self.final_attn_token_to_image.tokens_to_image(queries + point_embedding, keys + key_pe, keys)
        else:
            attn = self.final_attn_token_to_image(queries + point_embedding, keys + key_pe, keys)
        return self.norm_final_attn(queries + attn), keys
