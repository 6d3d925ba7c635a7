"""Video predictor with the official SAM2VideoPredictor interface, on bounded memory.

    predictor = segapp.build_video_predictor("sam2.1_hiera_t", "checkpoints/sam2.1_hiera_tiny.pt")
    state = predictor.init_state("video.mp4")          # returns at once; frames decode lazily
    predictor.add_new_points_or_box(state, 0, obj_id=1, points=[[210, 350]], labels=[1])
    for frame_idx, obj_ids, mask_logits in predictor.propagate_in_video(state):
        ...                                             # [num_objects, 1, H, W] logits, streamed

Prompts are turned into outputs at once (without memory) and committed into memory when
propagation starts, as in the reference, so a user can refine clicks before tracking.
Propagation re-tracks every frame without prompts, like the reference, reading memory from
the session's bounded store (see segapp.video.session).

Where results can differ from the reference: the reference keeps every frame's output, so a
propagation started on a frame far (more than the memory window) from any prompt and from
where the last propagation stopped, or a correction click on such a frame, sees memory there
that segapp has dropped. Starting from a prompted frame, from the last tracked frame, or
from either end of the video matches. Small holes are filled in output masks on every device
(the reference skips that without its CUDA extension).
"""
from __future__ import annotations

import logging
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from segapp.modeling.sam2 import SAM2Model
from segapp.prompts import BOX_CORNER_LABELS, check_boxes, check_obj_id, check_points
from segapp.transforms import PIXEL_MEAN, PIXEL_STD, ImageTransforms
from segapp.video.frames import open_frames
from segapp.video.prefetch import Prefetcher
from segapp.video.session import ObjectTrack, PointPrompt, VideoSession
from segapp.video.tracker import (NO_OBJ_SCORE, FrameFeatures, FrameOutput, Tracker, fill_holes,
                                  memory_window, non_overlapping, select_memory)

logger = logging.getLogger(__name__)

# Previous mask logits fed back with new clicks are clamped to this range (as the reference).
PREV_MASK_LOGIT_CLAMP = 32.0


class SkippedFrameError(RuntimeError):
    """A prompt was given on a frame that cannot be decoded."""


class VideoPredictor:
    """Promptable video segmentation with SAM 2 memory; owns a model and creates sessions.

    Args:
      model: a SAM2Model (see segapp.build_model).
      fill_hole_area: fill background holes up to this many low-res pixels in outputs
        (None: the model's tracking setting, 8 for the official configs).
      non_overlap_masks: make the returned masks of different objects disjoint.
      memory_dtype: dtype spatial memories are stored in (torch.bfloat16 halves the state).
      feature_cache_size: frames whose image features are kept, most recent first.
      attention_dtype: dtype of the memory cross-attention kernels, most of a frame's work
        with several objects. torch.bfloat16 makes memory attention ~2.4x faster on a CPU with
        bf16 matrix units (as SAM 2 runs under CUDA autocast); masks then differ slightly from
        fp32 (docs/benchmarks/video.md). Projections, rotations and everything else stay fp32.
    """

    def __init__(self, model: SAM2Model, fill_hole_area: int | None = None, non_overlap_masks: bool = False,
                 memory_dtype: torch.dtype = torch.float32, feature_cache_size: int = 2,
                 attention_dtype: torch.dtype = torch.float32) -> None:
        from segapp.bundled import require_video

        require_video(model)  # ImageOnlyModelError for weights whose memory was never trained
        for name, dtype in (("memory_dtype", memory_dtype), ("attention_dtype", attention_dtype)):
            if dtype not in (torch.float32, torch.bfloat16, torch.float16):
                raise ValueError(f"{name} must be torch.float32, torch.bfloat16 or torch.float16, got {dtype}")
        self.model = model.eval()
        self.tracker = Tracker(model, attention_dtype=attention_dtype)
        self.fill_hole_area = model.tracking.fill_hole_area if fill_hole_area is None else fill_hole_area
        self.non_overlap_masks = non_overlap_masks
        self.memory_dtype = memory_dtype
        self.feature_cache_size = feature_cache_size
        self.transforms = ImageTransforms(model.image_size)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def attention_dtype(self) -> torch.dtype:
        """dtype of the memory cross-attention kernels (the constructor's attention_dtype)."""
        return self.tracker.attention_dtype

    @property
    def image_size(self) -> int:
        return self.model.image_size

    # ------------------------------------------------------------------ session
    @torch.inference_mode()
    def init_state(self, video_path, offload_video_to_cpu: bool = False, offload_state_to_cpu: bool = False,
                   async_loading_frames: bool = False) -> VideoSession:
        """Open a video (file, folder of JPEG/PNG frames, or list of [H, W, 3] uint8 frames).

        Frames are always decoded lazily and never held on the accelerator, so
        offload_video_to_cpu and async_loading_frames are accepted for compatibility with the
        official API and change nothing; offload_state_to_cpu keeps outputs in CPU memory when
        the model runs on an accelerator.
        """
        frames = open_frames(video_path)
        storage = torch.device("cpu") if offload_state_to_cpu else self.device
        return VideoSession(frames, self.image_size, self.device, storage, window=memory_window(self.model),
                            feature_cache_size=self.feature_cache_size, memory_dtype=self.memory_dtype)

    @torch.inference_mode()
    def reset_state(self, state: VideoSession) -> None:
        """Remove all objects, prompts and results (the video stays open)."""
        state.reset()

    # ------------------------------------------------------------------ features
    def prepare_frame(self, frame: np.ndarray) -> torch.Tensor:
        """[H, W, 3] uint8 -> [1, 3, S, S] normalised, on the host, resized like the official frame
        loader (Pillow bicubic on 8-bit pixels), so tracking matches the reference frame for frame.
        On CUDA the tensor is in pinned memory, so that `.to(device, non_blocking=True)` does not
        stall the host. Runs in the prefetch worker (segapp.video.prefetch)."""
        from PIL import Image

        side = self.image_size
        resized = np.asarray(Image.fromarray(frame).resize((side, side), Image.Resampling.BICUBIC))
        x = torch.from_numpy(resized / 255.0).float().permute(2, 0, 1)
        mean = torch.tensor(PIXEL_MEAN).view(3, 1, 1)
        std = torch.tensor(PIXEL_STD).view(3, 1, 1)
        x = ((x - mean) / std).unsqueeze(0)
        return x.pin_memory() if self.device.type == "cuda" else x

    def _load_frame(self, state: VideoSession, frame_idx: int) -> torch.Tensor | None:
        """The prepared model input of a frame (host), or None when it cannot be decoded."""
        frame = state.frames.get(frame_idx)
        return None if frame is None else self.prepare_frame(frame)

    def _features(self, state: VideoSession, frame_idx: int, prefetch: Prefetcher | None = None) -> FrameFeatures | None:
        """Image features of a frame (cached), or None when the frame cannot be decoded."""
        feats = state.cached_features(frame_idx)
        if feats is None:
            image = self._load_frame(state, frame_idx) if prefetch is None else prefetch.take(frame_idx)
            if image is None:
                return None
            feats = self.encode_frame(state, frame_idx, image)
        return feats

    @torch.inference_mode()
    def encode_frame(self, state: VideoSession, frame_idx: int, image: torch.Tensor) -> FrameFeatures:
        """Run the image encoder on a prepared frame ([1, 3, S, S] from `prepare_frame`) and cache
        its features in `state` for tracking and prompts on `frame_idx`."""
        image = image.to(self.device, non_blocking=True)
        feats = FrameFeatures.from_backbone(self.model, self.model.forward_image(image))
        state.cache_features(frame_idx, feats)
        return feats

    def _prompt_features(self, state: VideoSession, frame_idx: int) -> FrameFeatures:
        feats = self._features(state, frame_idx)
        if feats is None:
            raise SkippedFrameError(f"frame {frame_idx} cannot be decoded, so it cannot take prompts")
        return feats

    # ------------------------------------------------------------------ prompts
    @torch.inference_mode()
    def add_new_points_or_box(self, inference_state: VideoSession, frame_idx: int, obj_id, points=None,
                              labels=None, clear_old_points: bool = True, normalize_coords: bool = True,
                              box=None):
        """Add clicks and/or a box for one object on one frame.

        obj_id: an int or a str. points: [N, 2] xy (pixels of the video, or relative in [0, 1]
        with normalize_coords=False), inside the frame; labels: [N] (1 foreground, 0 background,
        -1 padding); box: [4] xyxy with x0 <= x1, y0 <= y1. Checked as ImagePredictor.predict
        checks its prompts (segapp.prompts); ValueError names the problem. Returns (frame_idx,
        obj_ids, mask logits [num_objects, 1, H, W] at video resolution).
        """
        state = inference_state
        frame_idx = state.check_frame(frame_idx)
        obj_id = check_obj_id(obj_id)
        if (points is None) != (labels is None):
            raise ValueError("points and labels must be given together")
        if points is None and box is None:
            raise ValueError("give points with labels, or a box, or both")
        hw = (state.video_height, state.video_width)
        # The same checks as ImagePredictor.predict (segapp.prompts): labels 1/0/-1, finite
        # points and boxes inside the frame, x0 <= x1 and y0 <= y1.
        coords = torch.zeros(1, 0, 2)
        labs = torch.zeros(1, 0, dtype=torch.int32)
        if points is not None:
            pc, pl = check_points(points, labels, hw, normalize_coords, names=("points", "labels"))
            if pc.shape[0] != 1:
                raise ValueError(f"points must be [N, 2] xy for one object, got shape {np.shape(points)}")
            coords = torch.as_tensor(pc, dtype=torch.float32)
            labs = torch.as_tensor(pl, dtype=torch.int32)
        if box is not None:
            if not clear_old_points:
                raise ValueError("a box must come before any click: use clear_old_points=True with a box")
            bx = check_boxes(box, hw, normalize_coords)
            if bx.shape[0] != 1:
                raise ValueError(f"box must be [4] xyxy (one box per object), got shape {np.shape(box)}")
            coords = torch.cat([torch.as_tensor(bx, dtype=torch.float32).reshape(1, 2, 2), coords], dim=1)
            labs = torch.cat([torch.tensor([BOX_CORNER_LABELS], dtype=torch.int32), labs], dim=1)
        coords = self.transforms.coords_to_input(coords, (state.video_height, state.video_width), normalize_coords)
        prompt = PointPrompt(coords.to(self.device), labs.to(self.device))
        obj = state.add_points(obj_id, frame_idx, prompt, extend=not clear_old_points)
        return self._run_prompt(state, obj, frame_idx)

    def add_new_points(self, *args, **kwargs):
        """Old name of add_new_points_or_box."""
        return self.add_new_points_or_box(*args, **kwargs)

    @torch.inference_mode()
    def add_new_mask(self, inference_state: VideoSession, frame_idx: int, obj_id, mask):
        """Give one object's mask on one frame: [H, W] bool/0-1 at video resolution (or at the
        model's S x S). Returns (frame_idx, obj_ids, mask logits at video resolution)."""
        state = inference_state
        frame_idx = state.check_frame(frame_idx)
        obj_id = check_obj_id(obj_id)
        m = torch.as_tensor(np.asarray(mask)) if not isinstance(mask, torch.Tensor) else mask
        side = self.image_size
        allowed = {(state.video_height, state.video_width), (side, side)}
        if m.dim() != 2 or tuple(m.shape) not in allowed:
            raise ValueError(
                f"mask must be 2-D of the video's size {state.video_height}x{state.video_width} (H x W) "
                f"or the model's {side}x{side}; got shape {tuple(m.shape)}"
            )
        m = m.to(self.device).bool().float()[None, None]
        if tuple(m.shape[-2:]) != (side, side):
            m = F.interpolate(m, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
            m = (m >= 0.5).float()
        obj = state.add_mask(obj_id, frame_idx, m)
        return self._run_prompt(state, obj, frame_idx)

    def _run_prompt(self, state: VideoSession, obj: ObjectTrack, frame_idx: int):
        """Predict an object's mask from its prompts on a frame; kept pending, not yet memory."""
        is_init = frame_idx not in obj.tracked or not obj.cond
        reverse = False if is_init else obj.tracked[frame_idx]
        is_cond = is_init
        feats = self._prompt_features(state, frame_idx)
        point = obj.points.get(frame_idx)
        mask = obj.masks.get(frame_idx)
        prev_logits = None
        if point is not None:
            prev = obj.latest_output(frame_idx, is_cond)
            if prev is not None:
                prev_logits = prev.pred_masks.to(self.device).clamp(-PREV_MASK_LOGIT_CLAMP, PREV_MASK_LOGIT_CLAMP)
        if mask is not None and self.model.tracking.use_mask_input_as_output_without_sam:
            pix = None  # the mask is taken as output; no memory needed
        elif is_init:
            pix = self.tracker.no_memory(feats, 1)
        else:
            sel = select_memory(self.model, frame_idx, obj.cond, obj.non_cond, state.num_frames, reverse)
            pix = self.tracker.condition(feats, [sel], state.num_frames, state.maskmem_pos)
        points = None if point is None else (point.coords, point.labels)
        out = self.tracker.predict(feats, pix if pix is not None else feats.top, points, mask, is_init, prev_logits)
        # The chosen mask's predicted IoU: the decoder keeps only the chosen column (single mask,
        # or the stable one) or the candidates, of which the best is taken.
        iou = None if out.iou_pred is None else float(out.iou_pred[0].max())
        state.prompt_output(obj, frame_idx, FrameOutput(fill_holes(out.pred_masks, self.fill_hole_area),
                                                        out.obj_ptr, out.object_score_logits, iou=iou), is_cond)
        return frame_idx, state.obj_ids, self.frame_masks(state, frame_idx, is_cond)

    def prompt_iou(self, inference_state: VideoSession, frame_idx: int, obj_id) -> float | None:
        """The model's own quality estimate (predicted IoU) of the mask an object's prompts gave
        on a frame; None where it has no prompt output there or its mask prompt was taken as
        the output. KeyError for an unknown object."""
        obj = inference_state.track(check_obj_id(obj_id))
        for outputs in (obj.pending_cond, obj.pending_non_cond, obj.cond):
            if frame_idx in outputs:
                return outputs[frame_idx].iou
        return None

    def frame_masks(self, state: VideoSession, frame_idx: int, is_cond: bool | None = None) -> torch.Tensor:
        """All objects' latest masks on a frame at video resolution [num_objects, 1, H, W]
        (objects without an output there get the "no object" score). is_cond: which pending
        prompt outputs count (None: the conditioning ones if any object has one there)."""
        if is_cond is None:
            is_cond = state.has_pending_cond(frame_idx)
        size = (state.video_height, state.video_width)
        out = torch.full((len(state.objects), 1, *size), NO_OBJ_SCORE, device=self.device)
        for i, obj in enumerate(state.objects):
            o = obj.latest_output(frame_idx, is_cond)
            if o is not None:
                out[i: i + 1] = ImageTransforms.masks_to_image(o.pred_masks.to(self.device), size)
        return non_overlapping(out) if self.non_overlap_masks else out

    @torch.inference_mode()
    def clear_all_prompts_in_frame(self, inference_state: VideoSession, frame_idx: int, obj_id,
                                   need_output: bool = True):
        """Remove one object's prompts on a frame; its output there stays as a tracked result."""
        state = inference_state
        frame_idx = state.check_frame(frame_idx)
        state.clear_prompts(obj_id, frame_idx)
        if not need_output:
            return None
        return frame_idx, state.obj_ids, self.frame_masks(state, frame_idx)

    @torch.inference_mode()
    def remove_object(self, inference_state: VideoSession, obj_id, strict: bool = False, need_output: bool = True):
        """Remove an object. Returns (remaining obj_ids, [(frame_idx, masks)] for the frames where
        it had prompts, whose other masks may change)."""
        state = inference_state
        if obj_id not in state.obj_ids:
            if strict:
                raise KeyError(f"cannot remove object id {obj_id!r}; known ids: {state.obj_ids}")
            return state.obj_ids, []
        if len(state.objects) == 1:
            state.reset()
            return state.obj_ids, []
        frames = sorted(state.track(obj_id).prompt_frames())
        for f in frames:
            state.clear_prompts(obj_id, f)
        state.remove(obj_id)
        updated = []
        if need_output:
            updated = [(f, self.frame_masks(state, f)) for f in frames]
        return state.obj_ids, updated

    # ------------------------------------------------------------------ propagation
    @torch.inference_mode()
    def commit_prompts(self, state: VideoSession) -> None:
        """Turn pending prompt outputs into memory (propagation and the stream tracker call this
        before tracking)."""
        side = self.image_size

        def encode(frame_idx: int, out: FrameOutput) -> tuple[torch.Tensor, torch.Tensor]:
            feats = self._prompt_features(state, frame_idx)
            high = F.interpolate(out.pred_masks.to(self.device), size=(side, side), mode="bilinear",
                                 align_corners=False)
            return self.tracker.encode_memory(feats, high, out.object_score_logits, from_points=True)

        state.commit(encode)

    @torch.inference_mode()
    def propagate_in_video(self, inference_state: VideoSession, start_frame_idx: int | None = None,
                           max_frame_num_to_track: int | None = None,
                           reverse: bool = False) -> Iterator[tuple[int, list, torch.Tensor]]:
        """Track all objects through the video, yielding (frame_idx, obj_ids, mask logits
        [num_objects, 1, H, W] at video resolution) frame by frame. Frames that cannot be decoded
        are skipped (not yielded) and listed in `inference_state.skipped_frames`."""
        state = inference_state
        self.commit_prompts(state)
        n = state.num_frames
        if start_frame_idx is None:
            start_frame_idx = state.first_cond_frame()
        start_frame_idx = state.check_frame(start_frame_idx)
        span = n if max_frame_num_to_track is None else int(max_frame_num_to_track)
        if span < 0:
            raise ValueError(f"max_frame_num_to_track must be >= 0, got {span}")
        if reverse:
            end = max(start_frame_idx - span, 0)
            order = range(start_frame_idx, end - 1, -1) if start_frame_idx > 0 else range(0)
        else:
            end = min(start_frame_idx + span, n - 1)
            order = range(start_frame_idx, end + 1)
        obj_ids = state.obj_ids
        # Frames that need image features (not conditioning for every object) are decoded and
        # resized ahead in a worker thread while the model tracks the current one.
        needed = [f for f in order if any(f not in o.cond for o in state.objects)]
        prefetch = Prefetcher(lambda f: self._load_frame(state, f), needed)
        try:
            for frame_idx in order:
                video_masks = self.track_frame(state, frame_idx, reverse, prefetch=prefetch)
                if video_masks is None:
                    logger.info("frame %d cannot be decoded; not tracked", frame_idx)
                    continue
                yield frame_idx, obj_ids, video_masks
        finally:
            prefetch.close()

    @torch.inference_mode()
    def track_frame(self, state: VideoSession, frame_idx: int, reverse: bool = False,
                    prefetch: Prefetcher | None = None) -> torch.Tensor | None:
        """Track every object on one frame from the memory in `state` (prompts committed with
        `commit_prompts` first) and store the outputs as memory; outputs no memory window can
        reach any more are dropped. Returns mask logits [num_objects, 1, H, W] at video
        resolution, or None when the frame cannot be decoded. `propagate_in_video` is this in a
        loop; `segapp.video.stream.StreamTracker` calls it once per frame of a live stream."""
        masks = self._track_frame(state, frame_idx, reverse, prefetch)
        state.prune(frame_idx)
        if masks is None:
            return None
        size = (state.video_height, state.video_width)
        video_masks = ImageTransforms.masks_to_image(masks.to(self.device), size)
        return non_overlapping(video_masks) if self.non_overlap_masks else video_masks

    def _track_frame(self, state: VideoSession, frame_idx: int, reverse: bool,
                     prefetch: Prefetcher | None = None) -> torch.Tensor | None:
        """Track every object on one frame; [num_objects, 1, S/4, S/4] logits, None if skipped."""
        masks: list[torch.Tensor | None] = [None] * len(state.objects)
        to_track: list[int] = []
        for i, obj in enumerate(state.objects):
            if frame_idx in obj.cond:
                masks[i] = obj.cond[frame_idx].pred_masks
                state.mark_tracked(obj, frame_idx, reverse)
            else:
                to_track.append(i)
        feats = None
        if to_track:
            feats = self._features(state, frame_idx, prefetch)
            if feats is None:
                return None
        # Objects whose memories have the same shape run as one batch.
        groups: dict[tuple[int, int], list[tuple[int, object]]] = {}
        for i in to_track:
            obj = state.objects[i]
            sel = select_memory(self.model, frame_idx, obj.cond, obj.non_cond, state.num_frames, reverse)
            groups.setdefault(sel.signature, []).append((i, sel))
        for members in groups.values():
            idx = [i for i, _ in members]
            pix = self.tracker.condition(feats, [s for _, s in members], state.num_frames, state.maskmem_pos)
            out = self.tracker.predict(feats, pix, None, None, is_init_cond=False)
            mem, _ = self.tracker.encode_memory(feats, out.high_res_masks, out.object_score_logits, from_points=False)
            filled = fill_holes(out.pred_masks, self.fill_hole_area)
            for row, i in enumerate(idx):
                state.store_tracked(state.objects[i], frame_idx, FrameOutput(
                    filled[row: row + 1], out.obj_ptr[row: row + 1],
                    out.object_score_logits[row: row + 1], mem[row: row + 1]), reverse)
                masks[i] = filled[row: row + 1]
        return torch.cat([m.to(self.device) for m in masks])


# The official class name, so `from segapp import SAM2VideoPredictor` ports code unchanged.
SAM2VideoPredictor = VideoPredictor


def build_video_predictor(name_or_path, checkpoint=None, device=None, image_size: int | None = None,
                          overrides=(), **predictor_kwargs) -> VideoPredictor:
    """Build a model (see segapp.build_model) and wrap it in a VideoPredictor."""
    from segapp.build import build_model

    model = build_model(name_or_path, checkpoint=checkpoint, device=device, image_size=image_size,
                        overrides=overrides)
    return VideoPredictor(model, **predictor_kwargs)
