"""The SAM 2 model: the parts, the learned embeddings between them, and the image path.

The model is a set of modules. Predictors own a model and drive it; the image path is
here (encode an image, decode prompts), the video tracking step lives with the video
predictor and uses the memory parts and the tracking settings kept here.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from segapp.modeling.image_encoder import BackboneOutput
from segapp.modeling.layers import MLP


@dataclass(frozen=True)
class TrackingConfig:
    """Settings of video tracking with memory (official names; defaults are SAM 2.1's)."""

    num_maskmem: int = 7  # memory frames attended: the conditioning frame(s) + 6 recent frames
    sigmoid_scale_for_mem_enc: float = 20.0
    sigmoid_bias_for_mem_enc: float = -10.0
    binarize_mask_from_pts_for_mem_enc: bool = True
    use_mask_input_as_output_without_sam: bool = True
    max_cond_frames_in_attn: int = -1
    multimask_output_in_sam: bool = True
    multimask_min_pt_num: int = 0
    multimask_max_pt_num: int = 1
    multimask_output_for_tracking: bool = True
    memory_temporal_stride_for_eval: int = 1
    non_overlap_masks_for_mem_enc: bool = False
    use_obj_ptrs_in_encoder: bool = True
    max_obj_ptrs_in_encoder: int = 16
    add_tpos_enc_to_obj_ptrs: bool = True
    proj_tpos_enc_in_obj_ptrs: bool = True
    use_signed_tpos_enc_to_obj_ptrs: bool = True
    only_obj_ptrs_in_the_past_for_eval: bool = True
    fixed_no_obj_ptr: bool = True
    soft_no_obj_ptr: bool = False
    use_mlp_for_obj_ptr_proj: bool = True
    no_obj_embed_spatial: bool = True
    fill_hole_area: int = 8

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> "TrackingConfig":
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown tracking settings {unknown}; known: {sorted(known)}")
        return cls(**values)


@dataclass
class ImageEmbedding:
    """What the decoder needs of an image: image_embed [B, C, h, w] and
    high_res_feats [[B, C/8, 4h, 4w], [B, C/4, 2h, 2w]] (already projected for the decoder)."""

    image_embed: torch.Tensor
    high_res_feats: list[torch.Tensor]

    def select(self, index: int) -> "ImageEmbedding":
        """The embedding of one image of the batch, keeping a batch axis of 1."""
        return ImageEmbedding(self.image_embed[index: index + 1],
                              [f[index: index + 1] for f in self.high_res_feats])


class SAM2Model(nn.Module):
    """SAM 2: image encoder, prompt encoder, mask decoder, memory encoder, memory attention.

    Args:
      image_encoder, prompt_encoder, mask_decoder, memory_attention, memory_encoder: the parts.
      image_size: side of the square model input in pixels (declared once in the config).
      backbone_stride: stride of the coarsest kept feature map (16).
      directly_add_no_mem_embed: add the learned "no memory" embedding to single-image
        features instead of running memory attention (how SAM 2 treats images).
      tracking: video settings (see TrackingConfig).
    Predictor presets such as box zoom are not the network's: see segapp.build_info.
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        prompt_encoder: nn.Module,
        mask_decoder: nn.Module,
        memory_attention: nn.Module,
        memory_encoder: nn.Module,
        image_size: int = 1024,
        backbone_stride: int = 16,
        directly_add_no_mem_embed: bool = True,
        tracking: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.memory_attention = memory_attention
        self.memory_encoder = memory_encoder
        self.image_size = image_size
        self.backbone_stride = backbone_stride
        self.directly_add_no_mem_embed = directly_add_no_mem_embed
        self.tracking = TrackingConfig.from_dict(tracking)
        self._check_contracts()

        t = self.tracking
        hidden = self.hidden_dim
        mem_dim = self.mem_dim
        self.use_high_res_features_in_sam = mask_decoder.use_high_res_features
        self.num_feature_levels = 3 if self.use_high_res_features_in_sam else 1
        self.pred_obj_scores = mask_decoder.pred_obj_scores

        # Learned embeddings that join the parts; names follow the official checkpoints.
        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(t.num_maskmem, 1, 1, mem_dim))
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, hidden))
        self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, hidden))
        if t.use_obj_ptrs_in_encoder:
            self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)
            self.obj_ptr_proj = MLP(hidden, hidden, hidden, 3) if t.use_mlp_for_obj_ptr_proj else nn.Linear(hidden, hidden)
        else:
            self.obj_ptr_proj = nn.Identity()
        if t.fixed_no_obj_ptr and not (self.pred_obj_scores and t.use_obj_ptrs_in_encoder):
            raise ValueError("fixed_no_obj_ptr needs pred_obj_scores and use_obj_ptrs_in_encoder")
        if self.pred_obj_scores and t.use_obj_ptrs_in_encoder:
            self.no_obj_ptr = nn.Parameter(torch.zeros(1, hidden))
        if t.proj_tpos_enc_in_obj_ptrs and not t.add_tpos_enc_to_obj_ptrs:
            raise ValueError("proj_tpos_enc_in_obj_ptrs needs add_tpos_enc_to_obj_ptrs")
        self.obj_ptr_tpos_proj = nn.Linear(hidden, mem_dim) if t.proj_tpos_enc_in_obj_ptrs else nn.Identity()
        self.no_obj_embed_spatial = nn.Parameter(torch.zeros(1, mem_dim)) if t.no_obj_embed_spatial else None
        # Learned embeddings start small and random, as in training.
        for p in (self.maskmem_tpos_enc, self.no_mem_embed, self.no_mem_pos_enc,
                  getattr(self, "no_obj_ptr", None), self.no_obj_embed_spatial):
            if p is not None:
                nn.init.trunc_normal_(p, std=0.02)

    # ----------------------------------------------------------------------------- contracts
    @property
    def hidden_dim(self) -> int:
        return self.image_encoder.neck.d_model

    @property
    def mem_dim(self) -> int:
        return getattr(self.memory_encoder, "out_dim", self.hidden_dim)

    def _check_contracts(self) -> None:
        hidden = self.hidden_dim
        widths = {
            "prompt encoder embed_dim": self.prompt_encoder.embed_dim,
            "mask decoder transformer_dim": self.mask_decoder.transformer_dim,
        }
        for what, width in widths.items():
            if width != hidden:
                raise ValueError(f"{what} is {width}, but the neck's d_model is {hidden}")
        expected = (self.image_size // self.backbone_stride,) * 2
        if tuple(self.prompt_encoder.image_embedding_size) != expected:
            raise ValueError(
                f"prompt encoder embedding size {self.prompt_encoder.image_embedding_size} does not follow "
                f"image_size {self.image_size} / stride {self.backbone_stride}"
            )
        if self.image_size % 32:
            raise ValueError(f"image_size must be a multiple of 32 (the trunk's total stride), got {self.image_size}")
        kv_dim = getattr(self.memory_attention, "kv_in_dim", self.mem_dim)
        if kv_dim != self.mem_dim:
            raise ValueError(f"memory attention reads {kv_dim}-wide memories, the memory encoder writes {self.mem_dim}")
        attn_dim = getattr(self.memory_attention, "d_model", hidden)
        if attn_dim != hidden:
            raise ValueError(f"memory attention d_model {attn_dim} differs from the neck's d_model {hidden}")

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ----------------------------------------------------------------------------- image path
    def forward_image(self, images: torch.Tensor) -> BackboneOutput:
        """images: [B, 3, S, S] normalised -> features, with the two finest levels already
        projected by the decoder's skip convolutions (done once per image, not per prompt)."""
        out = self.image_encoder(images)
        if self.use_high_res_features_in_sam:
            out.backbone_fpn[0] = self.mask_decoder.conv_s0(out.backbone_fpn[0])
            out.backbone_fpn[1] = self.mask_decoder.conv_s1(out.backbone_fpn[1])
        return out

    def embed_images(self, images: torch.Tensor) -> ImageEmbedding:
        """images: [B, 3, S, S] normalised -> the decoder's view of each image, without memory."""
        out = self.forward_image(images)
        embed = out.backbone_fpn[-1]
        if self.directly_add_no_mem_embed:
            embed = embed + self.no_mem_embed.reshape(1, -1, 1, 1)
        high_res = list(out.backbone_fpn[:-1]) if self.use_high_res_features_in_sam else []
        return ImageEmbedding(embed, high_res)

    def decode(
        self,
        embedding: ImageEmbedding,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        mask_input: torch.Tensor | None,
        multimask_output: bool,
        iou_floor: float | None = None,
    ):
        """Decode prompts, one output per prompt row, against one image's embedding (batch axis
        1: every prompt on that image) or against one embedding per prompt (batch axis B: prompt
        b on image b, e.g. the crops of box zoom).

        points: ([B, N, 2] xy model-input pixels, [B, N] labels; boxes are two corner points
        labelled 2 and 3); mask_input: [B, 1, 4h, 4w] logits; iou_floor: see MaskDecoder.forward.
        Returns a DecoderOutput.
        """
        sparse, dense = self.prompt_encoder(points=points, boxes=None, masks=mask_input)
        batched = points is not None and points[0].shape[0] > 1 and embedding.image_embed.shape[0] == 1
        high_res = embedding.high_res_feats if self.use_high_res_features_in_sam else None
        return self.mask_decoder(
            image_embeddings=embedding.image_embed,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
            repeat_image=batched,
            high_res_features=high_res,
            iou_floor=iou_floor,
        )

    def forward(self, *args, **kwargs):
        raise NotImplementedError(
            "SAM2Model has no single forward; use segapp.ImagePredictor or the video predictor"
        )
