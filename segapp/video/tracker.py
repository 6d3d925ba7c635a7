"""One tracking step of SAM 2 over segapp's model: memory, SAM heads, new memory.

For a frame and a batch of objects, the step
  1. conditions the frame's features on each object's memory (memory attention over the
     spatial memories of its conditioning frames and recent frames, plus its object pointers),
  2. runs the prompt encoder and mask decoder ("SAM heads") with any clicks or mask,
     predicting whether the object is visible at all (object score),
  3. encodes the predicted mask into a new spatial memory and an object pointer.
The objects of a batch are independent; they are batched only where their memories have the
same shape (same number of memory frames and pointers), which is the usual case.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from segapp.modeling.sam2 import SAM2Model

# Mask logit written where the object is predicted absent (the official "no object" score).
NO_OBJ_SCORE = -1024.0
# A mask given as output directly is turned into logits of -10 / +10 (sigmoid ~ 0 / 1).
MASK_AS_OUTPUT_SCALE, MASK_AS_OUTPUT_BIAS = 20.0, -10.0
# Hole-filling writes this small positive logit into small background holes.
HOLE_FILL_LOGIT = 0.1


@dataclass
class FrameFeatures:
    """Image features of one frame (batch axis 1), as the tracking step needs them.

    top: [1, C, H, W] coarsest level; top_pos: [1, C, H, W] its position encoding;
    high_res: the two finer levels, already projected for the decoder (or empty).
    """

    top: torch.Tensor
    top_pos: torch.Tensor
    high_res: list[torch.Tensor]

    @classmethod
    def from_backbone(cls, model: SAM2Model, out) -> "FrameFeatures":
        high = list(out.backbone_fpn[:-1][-2:]) if model.use_high_res_features_in_sam else []
        return cls(out.backbone_fpn[-1], out.vision_pos_enc[-1], high)

    def expand(self, batch: int) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        return (self.top.expand(batch, -1, -1, -1), self.top_pos.expand(batch, -1, -1, -1),
                [f.expand(batch, -1, -1, -1) for f in self.high_res])


@dataclass
class FrameOutput:
    """What tracking keeps of one object on one frame (batch axis 1).

    pred_masks: [1, 1, S/4, S/4] logits (after hole filling); obj_ptr: [1, C];
    object_score_logits: [1, 1]; maskmem_features: [1, mem_dim, H, W] or None until encoded;
    iou: the decoder's predicted IoU of the mask, for outputs of prompts (None for tracked ones).
    """

    pred_masks: torch.Tensor
    obj_ptr: torch.Tensor
    object_score_logits: torch.Tensor
    maskmem_features: torch.Tensor | None = None
    iou: float | None = None


@dataclass
class StepOutput:
    """Batched result of a step over B objects."""

    pred_masks: torch.Tensor  # [B, 1, S/4, S/4] logits (before hole filling)
    high_res_masks: torch.Tensor  # [B, 1, S, S]
    obj_ptr: torch.Tensor  # [B, C]
    object_score_logits: torch.Tensor  # [B, 1]
    maskmem_features: torch.Tensor | None = None  # [B, mem_dim, H, W]
    # For training: every decoder output [B, M, S/4, S/4] (before the absent-object score is
    # written) and the predicted IoUs [B, M]; None for a mask taken as output.
    multimasks: torch.Tensor | None = None
    iou_pred: torch.Tensor | None = None

    def for_object(self, i: int, memory: torch.Tensor | None = None) -> FrameOutput:
        """Object i's output, with row i of `memory` ([B, mem_dim, H, W], the step's encoded
        memory; default: maskmem_features) as its spatial memory."""
        memory = self.maskmem_features if memory is None else memory
        mem = None if memory is None else memory[i: i + 1]
        return FrameOutput(self.pred_masks[i: i + 1], self.obj_ptr[i: i + 1],
                           self.object_score_logits[i: i + 1], mem)


@dataclass
class MemorySelection:
    """The memory one object attends to on one frame.

    frames: (t_pos, output) pairs; t_pos 0 for conditioning frames, 1..num_maskmem-1 for recent
    frames (larger = closer). pointers: (signed frame distance, obj_ptr [1, C]) pairs.
    """

    frames: list[tuple[int, FrameOutput]]
    pointers: list[tuple[int, torch.Tensor]]

    @property
    def signature(self) -> tuple[int, int]:
        return len(self.frames), len(self.pointers)


def sine_encoding_1d(positions: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """positions: [N] float -> [N, dim]: sines then cosines of geometric frequencies."""
    half = dim // 2
    steps = torch.arange(half, dtype=torch.float32, device=positions.device)
    freqs = temperature ** (2 * (steps // 2) / half)
    angles = positions.float().unsqueeze(-1) / freqs
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def closest_cond_frames(frame_idx: int, cond: dict, limit: int) -> tuple[dict, dict]:
    """Split conditioning outputs into the `limit` temporally closest to `frame_idx` (always the
    nearest before and the nearest at-or-after) and the rest; limit -1 keeps all."""
    if limit == -1 or len(cond) <= limit:
        return dict(cond), {}
    if limit < 2:
        raise ValueError("max_cond_frames_in_attn must be -1 or at least 2")
    chosen = []
    before = [t for t in cond if t < frame_idx]
    after = [t for t in cond if t >= frame_idx]
    if before:
        chosen.append(max(before))
    if after:
        chosen.append(min(after))
    rest = sorted((t for t in cond if t not in chosen), key=lambda t: abs(t - frame_idx))
    chosen += rest[: limit - len(chosen)]
    return {t: cond[t] for t in chosen}, {t: v for t, v in cond.items() if t not in chosen}


def memory_frame_indices(frame_idx: int, num_maskmem: int, stride: int, reverse: bool) -> list[tuple[int, int]]:
    """(t_pos, frame) of the recent frames attended to: the previous frame, then every
    stride-th frame further back (in the tracking direction)."""
    out = []
    for t_pos in range(1, num_maskmem):
        back = num_maskmem - t_pos
        if back == 1:
            prev = frame_idx + 1 if reverse else frame_idx - 1
        elif not reverse:
            prev = ((frame_idx - 2) // stride) * stride - (back - 2) * stride
        else:
            prev = -(-(frame_idx + 2) // stride) * stride + (back - 2) * stride
        out.append((t_pos, prev))
    return out


def memory_window(model: SAM2Model) -> int:
    """How many frames away (in the tracking direction) a step may read outputs from: spatial
    memories reach (num_maskmem - 2) * stride + 1 frames back, pointers max_obj_ptrs - 1; one
    stride / one frame more is kept as a margin."""
    t = model.tracking
    spatial = (t.num_maskmem - 1) * t.memory_temporal_stride_for_eval + 1
    pointers = t.max_obj_ptrs_in_encoder if t.use_obj_ptrs_in_encoder else 0
    return max(spatial, pointers)


def select_memory(model: SAM2Model, frame_idx: int, cond: dict, non_cond: dict, num_frames: int,
                  reverse: bool) -> MemorySelection:
    """The memories and object pointers an object attends to on `frame_idx`, chosen by the
    official rules (see TrackingConfig) from its conditioning and non-conditioning outputs."""
    t = model.tracking
    if not cond:
        raise RuntimeError("an object without conditioning frames cannot be tracked")
    selected, unselected = closest_cond_frames(frame_idx, cond, t.max_cond_frames_in_attn)
    frames = [(0, out) for out in selected.values()]
    for t_pos, prev in memory_frame_indices(frame_idx, t.num_maskmem, t.memory_temporal_stride_for_eval, reverse):
        out = non_cond.get(prev, unselected.get(prev))
        if out is not None:
            frames.append((t_pos, out))
    pointers: list[tuple[int, torch.Tensor]] = []
    if t.use_obj_ptrs_in_encoder:
        max_ptrs = min(num_frames, t.max_obj_ptrs_in_encoder)
        sign = -1 if reverse else 1
        for ft, out in selected.items():
            if t.only_obj_ptrs_in_the_past_for_eval and (ft < frame_idx if reverse else ft > frame_idx):
                continue
            dist = (frame_idx - ft) * sign if t.use_signed_tpos_enc_to_obj_ptrs else abs(frame_idx - ft)
            pointers.append((dist, out.obj_ptr))
        for diff in range(1, max_ptrs):
            ft = frame_idx + diff if reverse else frame_idx - diff
            if ft < 0 or ft >= num_frames:
                break
            out = non_cond.get(ft, unselected.get(ft))
            if out is not None:
                pointers.append((diff, out.obj_ptr))
    return MemorySelection(frames, pointers)


class Tracker:
    """The per-frame tracking computation over a SAM2Model (no state of its own)."""

    def __init__(self, model: SAM2Model, attention_dtype: torch.dtype = torch.float32) -> None:
        self.model = model
        self.cfg = model.tracking
        # dtype of the memory cross-attention kernels (see MemoryAttention.forward)
        self.attention_dtype = attention_dtype

    # ------------------------------------------------------------------ memory conditioning
    def condition(self, feats: FrameFeatures, selections: list[MemorySelection], num_frames: int,
                  maskmem_pos: torch.Tensor) -> torch.Tensor:
        """Fuse the frame's top features with each object's memory -> [B, C, H, W].

        All selections must share one signature (memory frames, pointers); maskmem_pos is the
        memory encoder's spatial position encoding [1, mem_dim, H, W] (the same for every frame).
        """
        m = self.model
        batch = len(selections)
        top, top_pos, _ = feats.expand(batch)
        _, channels, height, width = top.shape
        mem_dim = m.mem_dim
        device = top.device
        memories, positions = [], []
        spatial_pos = maskmem_pos.flatten(2).permute(2, 0, 1)  # [HW, 1, mem]
        num_frames_mem = len(selections[0].frames)
        for slot in range(num_frames_mem):
            feats_b, pos_b = [], []
            for sel in selections:
                t_pos, out = sel.frames[slot]
                feats_b.append(out.maskmem_features.to(device=device, dtype=torch.float32))
                pos_b.append(spatial_pos + m.maskmem_tpos_enc[self.cfg.num_maskmem - t_pos - 1])
            memories.append(torch.cat(feats_b).flatten(2).permute(2, 0, 1))
            positions.append(torch.cat(pos_b, dim=1))
        num_ptr_tokens = 0
        num_ptrs = len(selections[0].pointers)
        if num_ptrs:
            ptrs = torch.stack([torch.cat([p for _, p in sel.pointers]) for sel in selections], dim=1)  # [P, B, C]
            if self.cfg.add_tpos_enc_to_obj_ptrs:
                # Pointers carry how far back they are, scaled to [0, 1] by the pointer budget.
                span = min(num_frames, self.cfg.max_obj_ptrs_in_encoder) - 1
                dists = torch.tensor([[d for d, _ in sel.pointers] for sel in selections],
                                     dtype=torch.float32, device=device)  # [B, P]
                tpos_dim = channels if self.cfg.proj_tpos_enc_in_obj_ptrs else mem_dim
                ptr_pos = m.obj_ptr_tpos_proj(sine_encoding_1d(dists.flatten() / span, tpos_dim))
                ptr_pos = ptr_pos.reshape(batch, num_ptrs, mem_dim).transpose(0, 1)
            else:
                ptr_pos = ptrs.new_zeros(num_ptrs, batch, mem_dim)
            if mem_dim < channels:
                # A C-wide pointer becomes C / mem_dim memory tokens of width mem_dim.
                split = channels // mem_dim
                ptrs = ptrs.reshape(num_ptrs, batch, split, mem_dim).permute(0, 2, 1, 3).flatten(0, 1)
                ptr_pos = ptr_pos.repeat_interleave(split, dim=0)
            memories.append(ptrs)
            positions.append(ptr_pos)
            num_ptr_tokens = ptrs.shape[0]
        curr = top.flatten(2).permute(2, 0, 1)
        curr_pos = top_pos.flatten(2).permute(2, 0, 1)
        fused = m.memory_attention(curr, torch.cat(memories), curr_pos=curr_pos,
                                   memory_pos=torch.cat(positions), num_obj_ptr_tokens=num_ptr_tokens,
                                   grid_hw=(height, width), kernel_dtype=self.attention_dtype)
        return fused.permute(1, 2, 0).reshape(batch, channels, height, width)

    def no_memory(self, feats: FrameFeatures, batch: int) -> torch.Tensor:
        """Features of an initial conditioning frame: the learned "no memory" embedding added."""
        m = self.model
        top = feats.top.expand(batch, -1, -1, -1)
        if m.directly_add_no_mem_embed:
            return top + m.no_mem_embed.reshape(1, -1, 1, 1)
        curr = top.flatten(2).permute(2, 0, 1)
        curr_pos = feats.top_pos.expand(batch, -1, -1, -1).flatten(2).permute(2, 0, 1)
        memory = m.no_mem_embed.expand(1, batch, m.mem_dim)
        memory_pos = m.no_mem_pos_enc.expand(1, batch, m.mem_dim)
        fused = m.memory_attention(curr, memory, curr_pos=curr_pos, memory_pos=memory_pos,
                                   num_obj_ptr_tokens=0, grid_hw=tuple(top.shape[-2:]))
        return fused.permute(1, 2, 0).reshape(top.shape)

    # ------------------------------------------------------------------ SAM heads
    def sam_heads(self, pix_feat: torch.Tensor, high_res: list[torch.Tensor],
                  points: tuple[torch.Tensor, torch.Tensor] | None, mask_inputs: torch.Tensor | None,
                  multimask: bool) -> StepOutput:
        """Decode masks, object scores and object pointers for B objects.

        points: ([B, N, 2] model-input pixels, [B, N] labels) or None; mask_inputs: [B, 1, h, w]
        logits or masks (resized to the prompt encoder's mask size) or None.
        """
        m = self.model
        batch = pix_feat.shape[0]
        if points is None:
            # No clicks: one "not a point" so that the decoder sees the same prompt as in training.
            points = (pix_feat.new_zeros(batch, 1, 2), -torch.ones(batch, 1, dtype=torch.int32, device=pix_feat.device))
        if mask_inputs is not None and mask_inputs.shape[-2:] != m.prompt_encoder.mask_input_size:
            mask_inputs = F.interpolate(mask_inputs.float(), size=m.prompt_encoder.mask_input_size,
                                        mode="bilinear", align_corners=False, antialias=True)
        sparse, dense = m.prompt_encoder(points=points, boxes=None, masks=mask_inputs)
        dec = m.mask_decoder(
            image_embeddings=pix_feat, image_pe=m.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
            multimask_output=multimask, repeat_image=False,
            high_res_features=high_res if m.use_high_res_features_in_sam else None,
        )
        raw = masks = dec.masks.float()
        scores = dec.object_score_logits
        tokens = dec.sam_tokens
        visible = scores > 0
        if m.pred_obj_scores:
            # The spatial output is a hard choice: an absent object gets no mask at all.
            masks = torch.where(visible[:, :, None, None], masks, NO_OBJ_SCORE)
        rows = torch.arange(batch, device=masks.device)
        if multimask:
            best = dec.iou_pred.argmax(dim=-1)
            low = masks[rows, best].unsqueeze(1)
            token = tokens[rows, best] if tokens.shape[1] > 1 else tokens[:, 0]
        else:
            low, token = masks, tokens[:, 0]
        high = F.interpolate(low, size=(m.image_size, m.image_size), mode="bilinear", align_corners=False)
        ptr = m.obj_ptr_proj(token)
        ptr = self._occlusion_pointer(ptr, scores.sigmoid() if self.cfg.soft_no_obj_ptr else visible.float())
        return StepOutput(low, high, ptr, scores, multimasks=raw, iou_pred=dec.iou_pred)

    def _occlusion_pointer(self, ptr: torch.Tensor, presence: torch.Tensor) -> torch.Tensor:
        """Blend towards the learned "no object" pointer as presence [B, 1] goes to 0."""
        if not self.model.pred_obj_scores:
            return ptr
        if self.cfg.fixed_no_obj_ptr:
            ptr = presence * ptr
        return ptr + (1 - presence) * self.model.no_obj_ptr

    def mask_as_output(self, pix_feat: torch.Tensor, high_res: list[torch.Tensor],
                       masks: torch.Tensor) -> StepOutput:
        """Take binary masks [B, 1, S, S] as the output itself (a user mask is ground truth);
        the decoder is run on the mask only to get an object pointer."""
        m = self.model
        masks = masks.float()
        high = masks * MASK_AS_OUTPUT_SCALE + MASK_AS_OUTPUT_BIAS
        low = F.interpolate(high, size=(high.shape[-2] // 4, high.shape[-1] // 4), mode="bilinear",
                            align_corners=False, antialias=True)
        if self.cfg.use_obj_ptrs_in_encoder:
            ptr = self.sam_heads(pix_feat, high_res, None, m.mask_downsample(masks), multimask=False).obj_ptr
        else:
            ptr = masks.new_zeros(masks.shape[0], m.hidden_dim)
        present = (masks.flatten(1) > 0).any(dim=1, keepdim=True).float()
        scores = MASK_AS_OUTPUT_SCALE * present + MASK_AS_OUTPUT_BIAS
        return StepOutput(low, high, self._occlusion_pointer(ptr, present), scores)

    # ------------------------------------------------------------------ new memory
    def encode_memory(self, feats: FrameFeatures, high_res_masks: torch.Tensor,
                      object_score_logits: torch.Tensor, from_points: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode B predicted masks [B, 1, S, S] on this frame -> (features [B, mem, H, W],
        position encoding [1, mem, H, W])."""
        m = self.model
        batch = high_res_masks.shape[0]
        if self.cfg.non_overlap_masks_for_mem_enc:
            high_res_masks = non_overlapping(high_res_masks)
        if self.cfg.binarize_mask_from_pts_for_mem_enc and from_points:
            probs = (high_res_masks > 0).float()
        else:
            probs = high_res_masks.sigmoid()
        probs = probs * self.cfg.sigmoid_scale_for_mem_enc + self.cfg.sigmoid_bias_for_mem_enc
        enc = m.memory_encoder(feats.top.expand(batch, -1, -1, -1), probs, skip_mask_sigmoid=True)
        mem = enc.vision_features
        if m.no_obj_embed_spatial is not None:
            absent = (object_score_logits <= 0).float()[..., None, None]
            mem = mem + absent * m.no_obj_embed_spatial[..., None, None]
        return mem, enc.vision_pos_enc[:1]

    # ------------------------------------------------------------------ one step
    def use_multimask(self, is_init_cond: bool, num_points: int) -> bool:
        c = self.cfg
        return (c.multimask_output_in_sam and (is_init_cond or c.multimask_output_for_tracking)
                and c.multimask_min_pt_num <= num_points <= c.multimask_max_pt_num)

    def predict(self, feats: FrameFeatures, pix_feat: torch.Tensor, points, mask_inputs,
                is_init_cond: bool, prev_mask_logits: torch.Tensor | None = None) -> StepOutput:
        """SAM heads on memory-conditioned features `pix_feat` [B, C, H, W], or the mask
        shortcut when a mask is given (and the config says masks are taken as output)."""
        batch = pix_feat.shape[0]
        _, _, high_res = feats.expand(batch)
        if mask_inputs is not None and self.cfg.use_mask_input_as_output_without_sam:
            return self.mask_as_output(feats.top.expand(batch, -1, -1, -1), high_res, mask_inputs)
        if prev_mask_logits is not None:
            mask_inputs = prev_mask_logits
        num_points = 0 if points is None else points[1].shape[1]
        return self.sam_heads(pix_feat, high_res, points, mask_inputs, self.use_multimask(is_init_cond, num_points))


def non_overlapping(masks: torch.Tensor) -> torch.Tensor:
    """[B, 1, H, W] logits: where objects overlap keep the highest, push the others to <= -10."""
    if masks.shape[0] == 1:
        return masks
    winner = masks.argmax(dim=0, keepdim=True)
    keep = winner == torch.arange(masks.shape[0], device=masks.device)[:, None, None, None]
    return torch.where(keep, masks, masks.clamp(max=MASK_AS_OUTPUT_BIAS))


def fill_holes(masks: torch.Tensor, max_area: int, on_device: bool | None = None) -> torch.Tensor:
    """Fill background holes (8-connected regions of logits <= 0) of at most `max_area` pixels
    with a small positive logit. masks: [B, 1, h, w]. On the CPU OpenCV finds the regions; on
    an accelerator (or with on_device=True) they are found on the device, with no copy to the
    host and no synchronisation (segapp.postprocess.small_components_torch)."""
    if max_area <= 0:
        return masks
    from segapp.formats.components import small_components
    from segapp.postprocess import small_components_torch

    if on_device if on_device is not None else masks.device.type != "cpu":
        holes = small_components_torch((masks <= 0)[:, 0], max_area)[:, None]
        return torch.where(holes, torch.full_like(masks, HOLE_FILL_LOGIT), masks)
    background = (masks <= 0).numpy()
    holes = torch.from_numpy(np.stack([small_components(b[0], max_area) for b in background])[:, None])
    if not holes.any():
        return masks
    return torch.where(holes, torch.full_like(masks, HOLE_FILL_LOGIT), masks)
