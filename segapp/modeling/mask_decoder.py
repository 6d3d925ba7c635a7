"""Mask decoder: prompt tokens + image embedding -> mask logits, IoU and object scores."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from segapp.modeling.layers import MLP, LayerNorm2d, activation_layer, conv_transpose2x2_nhwc, layer_norm_nhwc

# Object-score logit reported by decoders without an object-score head ("always present").
ALWAYS_PRESENT_SCORE = 10.0
# Logit given to every pixel of a prompt whose masks were not computed (see `iou_floor`).
SKIPPED_MASK_LOGIT = -1024.0


@dataclass
class DecoderOutput:
    """masks: [B, M, 4h, 4w] logits; iou_pred: [B, M]; sam_tokens: [B, M or 1, C] output tokens
    (for object pointers); object_score_logits: [B, 1]."""

    masks: torch.Tensor
    iou_pred: torch.Tensor
    sam_tokens: torch.Tensor
    object_score_logits: torch.Tensor


def stability_score(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """IoU of the masks thresholded at `threshold + offset` and `threshold - offset`.

    logits: [..., H, W] -> [...]; an empty outer mask scores 1.
    """
    flat = logits.flatten(-2)
    inner = (flat > threshold + offset).sum(-1).float()
    outer = (flat > threshold - offset).sum(-1).float()
    return torch.where(outer > 0, inner / outer, torch.ones_like(outer))


class MaskDecoder(nn.Module):
    """SAM 2 mask decoder.

    Output tokens (object score, IoU, 1 + num_multimask_outputs mask tokens) are prepended
    to the prompt tokens and run through the two-way transformer with the image
    embedding (plus the dense prompt). The image tokens are upscaled 4x with transposed
    convolutions, adding the stride-8 and stride-4 skip features when
    `use_high_res_features`; each mask token, through its own MLP, gives the weights of a
    dot product with every upscaled pixel: one mask per token.

    Token 0 is the single-mask output; tokens 1..3 are the multimask outputs. With
    `dynamic_multimask_via_stability` (SAM 2's default at inference), a single-mask
    request whose mask is unstable falls back to the best multimask output.

    share_image_side: fast path for many prompts on one image (`repeat_image` with one image
    embedding and one dense embedding for all prompts, i.e. no mask prompts; a dense batch
    of one, or one row broadcast with batch stride 0). The image side then stays at batch 1
    into the transformer, which broadcasts it: the image-side work of its first block runs
    once instead of once per prompt (and the transformer may use its factorised attention).
    The same outputs up to float rounding; False: the image embedding is repeated per prompt.

    matmul_convs: fast path in training mode (without iou_floor): the image tokens stay in the
    transformer's layout ([B, h*w, C], channels last) and the upscaling's transposed
    convolutions run as matrix products on them (`layers.conv_transpose2x2_nhwc`, the same
    parameters), the high-resolution features are read channels last (pass them in
    torch.channels_last to save a copy), and only the outputs returned get masks (the others
    are dropped unused in training). The same outputs and gradients up to float rounding, in a
    fraction of the CPU time of the convolution kernels; in eval mode, and with False, the
    plain path.
    """

    def __init__(
        self,
        transformer_dim: int,
        transformer: nn.Module,
        num_multimask_outputs: int = 3,
        activation: str = "gelu",
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
        use_high_res_features: bool = False,
        iou_prediction_use_sigmoid: bool = False,
        dynamic_multimask_via_stability: bool = False,
        dynamic_multimask_stability_delta: float = 0.05,
        dynamic_multimask_stability_thresh: float = 0.98,
        pred_obj_scores: bool = False,
        pred_obj_scores_mlp: bool = False,
        use_multimask_token_for_obj_ptr: bool = False,
        share_image_side: bool = True,
        matmul_convs: bool = True,
    ) -> None:
        super().__init__()
        self.share_image_side = share_image_side
        self.matmul_convs = matmul_convs
        if getattr(transformer, "embedding_dim", transformer_dim) != transformer_dim:
            raise ValueError(
                f"the transformer's width {transformer.embedding_dim} differs from transformer_dim {transformer_dim}"
            )
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.pred_obj_scores = pred_obj_scores
        if pred_obj_scores:
            self.obj_score_token = nn.Embedding(1, transformer_dim)
        self.use_multimask_token_for_obj_ptr = use_multimask_token_for_obj_ptr

        d4, d8 = transformer_dim // 4, transformer_dim // 8
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, d4, kernel_size=2, stride=2),
            LayerNorm2d(d4),
            activation_layer(activation),
            nn.ConvTranspose2d(d4, d8, kernel_size=2, stride=2),
            activation_layer(activation),
        )
        self.use_high_res_features = use_high_res_features
        if use_high_res_features:
            # Applied to the backbone's stride-4 and stride-8 maps once per image (see SAM2Model).
            self.conv_s0 = nn.Conv2d(transformer_dim, d8, kernel_size=1)
            self.conv_s1 = nn.Conv2d(transformer_dim, d4, kernel_size=1)
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, d8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(transformer_dim, iou_head_hidden_dim, self.num_mask_tokens,
                                       iou_head_depth, sigmoid_output=iou_prediction_use_sigmoid)
        if pred_obj_scores:
            self.pred_obj_score_head = (MLP(transformer_dim, transformer_dim, 1, 3) if pred_obj_scores_mlp
                                        else nn.Linear(transformer_dim, 1))
        self.dynamic_multimask_via_stability = dynamic_multimask_via_stability
        self.dynamic_multimask_stability_delta = dynamic_multimask_stability_delta
        self.dynamic_multimask_stability_thresh = dynamic_multimask_stability_thresh

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        repeat_image: bool,
        high_res_features: list[torch.Tensor] | None = None,
        iou_floor: float | None = None,
    ) -> DecoderOutput:
        """image_embeddings: [1 or B, C, h, w] (repeated to B prompts when `repeat_image`);
        image_pe: [1, C, h, w]; sparse: [B, N, C]; dense: [B, C, h, w];
        high_res_features: [stride-4 [., C/8, 4h, 4w], stride-8 [., C/4, 2h, 2w]].
        iou_floor: when given (multimask output, or no dynamic selection), masks are computed only
        for prompts with at least one output IoU prediction above it; the others get
        SKIPPED_MASK_LOGIT everywhere. The IoU predictions need no pixels, so callers that drop
        masks by predicted IoU anyway (segment everything) skip the costly upscaling for them."""
        if iou_floor is not None and not multimask_output and self.dynamic_multimask_via_stability \
                and not self.training:
            iou_floor = None  # single-mask selection looks at the masks' stability: compute all
        output_slice = slice(1, None) if multimask_output else slice(0, 1)
        fast = self.training and self.matmul_convs and iou_floor is None
        masks, iou_pred, mask_tokens_out, object_score_logits = self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings,
            repeat_image, high_res_features, iou_floor, output_slice, fast,
        )
        if fast:  # masks only for the outputs returned (training: no stability selection)
            iou_pred = iou_pred[:, output_slice]
        elif multimask_output:
            masks, iou_pred = masks[:, 1:], iou_pred[:, 1:]
        elif self.dynamic_multimask_via_stability and not self.training:
            masks, iou_pred = self.select_stable(masks, iou_pred)
        else:
            masks, iou_pred = masks[:, :1], iou_pred[:, :1]
        if multimask_output and self.use_multimask_token_for_obj_ptr:
            sam_tokens = mask_tokens_out[:, 1:]
        else:
            sam_tokens = mask_tokens_out[:, :1]
        return DecoderOutput(masks, iou_pred, sam_tokens, object_score_logits)

    def predict_masks(self, image_embeddings, image_pe, sparse, dense, repeat_image, high_res_features,
                      iou_floor: float | None = None, output_slice: slice = slice(None), fast: bool = False):
        """All 1 + num_multimask_outputs masks: ([B, T, 4h, 4w], [B, T], [B, T, C], [B, 1]).
        With `iou_floor`, only prompts whose IoU predictions in `output_slice` exceed it get masks.
        fast (see matmul_convs): masks only for the outputs in `output_slice` ([B, T', 4h, 4w])."""
        heads = [self.iou_token.weight, self.mask_tokens.weight]
        if self.pred_obj_scores:
            heads.insert(0, self.obj_score_token.weight)
        first = 1 if self.pred_obj_scores else 0  # index of the IoU token
        tokens = torch.cat(heads, dim=0).unsqueeze(0).expand(sparse.shape[0], -1, -1)
        tokens = torch.cat([tokens, sparse], dim=1)
        batch = tokens.shape[0]

        shared = self.share_image_side and repeat_image and image_embeddings.shape[0] == 1 \
            and dense.shape[0] in (1, batch) and (dense.shape[0] == 1 or dense.stride(0) == 0)
        if fast and not shared:
            # Image tokens channels last: a [B, C, h, w] view of [B, h, w, C], which the
            # transformer flattens into its [B, h*w, C] tokens without a copy.
            image = image_embeddings.repeat_interleave(batch, dim=0) if repeat_image else image_embeddings
            if image.shape[0] != batch:
                raise ValueError(f"{image.shape[0]} image embeddings for {batch} prompts")
            src = (image.permute(0, 2, 3, 1) + dense.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        elif shared:
            # One image and one dense embedding (no mask prompts) for every prompt: keep the
            # image side at batch 1 and let the transformer broadcast it (same result, the
            # image-side work of the first block done once instead of once per prompt).
            src = image_embeddings + dense[:1]
        elif repeat_image:
            src = image_embeddings.repeat_interleave(batch, dim=0) + dense
        else:
            if image_embeddings.shape[0] != batch:
                raise ValueError(f"{image_embeddings.shape[0]} image embeddings for {batch} prompts")
            src = image_embeddings + dense
        c, h, w = src.shape[1:]

        hs, src = self.transformer(src, image_pe, tokens)
        iou_token_out = hs[:, first]
        mask_tokens_out = hs[:, first + 1: first + 1 + self.num_mask_tokens]

        iou_pred = self.iou_prediction_head(iou_token_out)
        if fast:
            masks = self.upscale_tokens(src.reshape(batch, h, w, c), mask_tokens_out, high_res_features, output_slice)
            object_score_logits = self.object_scores(hs, iou_pred)
            return masks, iou_pred, mask_tokens_out, object_score_logits
        rows = None
        if iou_floor is not None:
            rows = torch.nonzero((iou_pred[:, output_slice] > iou_floor).any(dim=1)).flatten()
            if len(rows) == batch:
                rows = None
        if rows is not None:
            masks = src.new_full((batch, self.num_mask_tokens, 4 * h, 4 * w), SKIPPED_MASK_LOGIT)
            if len(rows):
                if high_res_features is not None:
                    high_res_features = [f if f.shape[0] == 1 else f[rows] for f in high_res_features]
                # Image tokens back to a map only for the prompts upscaled (a copy per prompt).
                kept = src[rows].transpose(1, 2).reshape(len(rows), c, h, w)
                masks[rows] = self.upscale_masks(kept, mask_tokens_out[rows], high_res_features)
        else:
            masks = self.upscale_masks(src.transpose(1, 2).reshape(batch, c, h, w), mask_tokens_out,
                                       high_res_features)
        return masks, iou_pred, mask_tokens_out, self.object_scores(hs, iou_pred)

    def object_scores(self, hs: torch.Tensor, iou_pred: torch.Tensor) -> torch.Tensor:
        """[B, 1] object-score logits from the transformer's tokens (a constant without the head)."""
        if self.pred_obj_scores:
            return self.pred_obj_score_head(hs[:, 0])
        return iou_pred.new_full((iou_pred.shape[0], 1), ALWAYS_PRESENT_SCORE)

    def upscale_tokens(self, tokens: torch.Tensor, mask_tokens_out: torch.Tensor,
                       high_res_features: list[torch.Tensor] | None, outputs: slice) -> torch.Tensor:
        """`upscale_masks` channels last (the matmul_convs fast path): image tokens as a map
        [B, h, w, C] -> [B, T', 4h, 4w] logits of the mask tokens in `outputs`."""
        dc1, ln1, act1, dc2, act2 = self.output_upscaling
        up = conv_transpose2x2_nhwc(tokens, dc1)
        if self.use_high_res_features:
            if high_res_features is None:
                raise ValueError("this decoder uses high-resolution features; none were given")
            feat_s0, feat_s1 = (f.permute(0, 2, 3, 1) for f in high_res_features)
            up = act1(layer_norm_nhwc(up + feat_s1, ln1))
            up = act2(conv_transpose2x2_nhwc(up, dc2) + feat_s0)
        else:
            up = act2(conv_transpose2x2_nhwc(act1(layer_norm_nhwc(up, ln1)), dc2))
        # Every hypernetwork runs (a few vectors each), so that the unused ones get zero gradients
        # as in the plain path, not none (AdamW still decays weights whose gradient is zero).
        hyper_in = torch.stack([mlp(mask_tokens_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)],
                               dim=1)[:, outputs]
        b, h, w, c = up.shape
        # [B, h*w, C] x [B, C, T']: the gradient of `up` comes back contiguous (for the GELU's backward).
        return (up.reshape(b, h * w, c) @ hyper_in.transpose(1, 2)).transpose(1, 2).reshape(b, -1, h, w)

    def upscale_masks(self, src: torch.Tensor, mask_tokens_out: torch.Tensor,
                      high_res_features: list[torch.Tensor] | None) -> torch.Tensor:
        """Image tokens [B, C, h, w] upscaled 4x, dotted with each mask token's hypernetwork
        output: [B, T, 4h, 4w] logits."""
        if self.use_high_res_features:
            if high_res_features is None:
                raise ValueError("this decoder uses high-resolution features; none were given")
            dc1, ln1, act1, dc2, act2 = self.output_upscaling
            feat_s0, feat_s1 = high_res_features
            up = act1(ln1(dc1(src) + feat_s1))
            up = act2(dc2(up) + feat_s0)
        else:
            up = self.output_upscaling(src)
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )  # [B, T, C/8]
        b, c, h, w = up.shape
        return (hyper_in @ up.reshape(b, c, h * w)).reshape(b, -1, h, w)

    def select_stable(self, masks: torch.Tensor, iou_pred: torch.Tensor):
        """Keep the single-mask output where it is stable, else the best-scoring multimask output."""
        multi, multi_iou = masks[:, 1:], iou_pred[:, 1:]
        best = multi_iou.argmax(dim=-1)
        rows = torch.arange(masks.shape[0], device=masks.device)
        best_masks, best_iou = multi[rows, best].unsqueeze(1), multi_iou[rows, best].unsqueeze(1)
        single, single_iou = masks[:, :1], iou_pred[:, :1]
        stable = stability_score(single, 0.0, self.dynamic_multimask_stability_delta) \
            >= self.dynamic_multimask_stability_thresh  # [B, 1]
        return (torch.where(stable[..., None, None], single, best_masks),
                torch.where(stable, single_iou, best_iou))
