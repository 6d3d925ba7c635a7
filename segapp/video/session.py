"""The state of one video being segmented: frames, objects, prompts and a bounded output store.

Memory stays bounded by design. Per object, the store keeps
  - the outputs of its conditioning frames (frames with clicks, boxes or masks), for good;
  - non-conditioning outputs only within `window` frames of the frame being tracked, of the
    last frame tracked, and of each conditioning frame (so that tracking restarted from a
    prompted frame, in either direction, finds the memory the reference would find);
every other output is dropped as soon as tracking moves on. Image features live in a small
LRU cache; frames are decoded lazily by the frame source.

The session owns its state, as transformers' Sam2VideoInferenceSession does: callers read an
object's stores through read-only views and change them only through the session's named
methods (add_points / add_mask, prompt_output, commit, store_tracked, prune, clear_prompts,
remove, reset), so no output escapes the pruning and commit rules.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable

import numpy as np
import torch

from segapp.video.frames import FrameSource
from segapp.video.tracker import FrameFeatures, FrameOutput


@dataclass
class PointPrompt:
    """coords: [1, N, 2] model-input pixels; labels: [1, N] int32 (boxes as points labelled 2, 3)."""

    coords: torch.Tensor
    labels: torch.Tensor

    def extended(self, coords: torch.Tensor, labels: torch.Tensor) -> "PointPrompt":
        return PointPrompt(torch.cat([self.coords, coords], dim=1), torch.cat([self.labels, labels], dim=1))


class ObjectTrack:
    """One object: its prompts, its outputs, and which frames it has been tracked on.

    Read through the views (`points`, `masks`, `cond`, `non_cond`, `pending_cond`,
    `pending_non_cond`, `tracked`: read-only mappings keyed by frame); changed only through
    named methods, which the VideoSession calls (and the video trainer, whose memory lives on
    the autograd graph, through `remember`).
    """

    def __init__(self, obj_id) -> None:
        self.obj_id = obj_id
        self._points: dict[int, PointPrompt] = {}
        self._masks: dict[int, torch.Tensor] = {}  # frame -> [1, 1, S, S] binary
        self._cond: dict[int, FrameOutput] = {}
        self._non_cond: dict[int, FrameOutput] = {}
        # Outputs of prompts not yet turned into memory (committed when propagation starts).
        self._pending_cond: dict[int, FrameOutput] = {}
        self._pending_non_cond: dict[int, FrameOutput] = {}
        self._tracked: dict[int, bool] = {}  # frame -> tracked in reverse

    def __repr__(self) -> str:
        return (f"ObjectTrack(obj_id={self.obj_id!r}, cond={sorted(self._cond)}, "
                f"non_cond={len(self._non_cond)} frames, prompts={sorted(self.prompt_frames())})")

    # ------------------------------------------------------------------ read-only views
    points = property(lambda self: MappingProxyType(self._points), doc="frame -> PointPrompt")
    masks = property(lambda self: MappingProxyType(self._masks), doc="frame -> [1, 1, S, S] mask prompt")
    cond = property(lambda self: MappingProxyType(self._cond), doc="frame -> conditioning memory")
    non_cond = property(lambda self: MappingProxyType(self._non_cond), doc="frame -> tracked memory")
    pending_cond = property(lambda self: MappingProxyType(self._pending_cond),
                            doc="frame -> prompt output not yet memory, on a conditioning frame")
    pending_non_cond = property(lambda self: MappingProxyType(self._pending_non_cond),
                                doc="frame -> correction output not yet memory")
    tracked = property(lambda self: MappingProxyType(self._tracked), doc="frame -> tracked in reverse")

    def prompt_frames(self) -> set[int]:
        return set(self._points) | set(self._masks)

    def latest_output(self, frame_idx: int, is_cond: bool) -> FrameOutput | None:
        """The newest output on a frame: the pending prompt output of that kind, else the
        conditioning memory, else the tracked one (None when the object has none there)."""
        pending = self._pending_cond if is_cond else self._pending_non_cond
        return pending.get(frame_idx) or self._cond.get(frame_idx) or self._non_cond.get(frame_idx)

    # ------------------------------------------------------------------ changes
    def remember(self, frame_idx: int, output: FrameOutput, conditioning: bool) -> None:
        """Keep an output as memory on a frame (a conditioning frame, or a tracked one)."""
        (self._cond if conditioning else self._non_cond)[frame_idx] = output


class VideoSession:
    """Inference state of one video (the official `inference_state`, as a typed object).

    Args:
      frames: the lazy frame source.
      image_size: the model's input side.
      device: where the model runs; storage_device: where outputs are kept.
      window: frames of non-conditioning outputs kept around the tracking position.
      feature_cache_size: frames whose image features are kept (LRU).
      memory_dtype: dtype of stored spatial memories (float32, or bfloat16 to halve them).
    """

    def __init__(self, frames: FrameSource, image_size: int, device: torch.device,
                 storage_device: torch.device, window: int, feature_cache_size: int = 2,
                 memory_dtype: torch.dtype = torch.float32) -> None:
        self.frames = frames
        self.num_frames = len(frames)
        self.video_height, self.video_width = frames.height, frames.width
        self.image_size = image_size
        self.device = device
        self.storage_device = storage_device
        self.window = window
        self.memory_dtype = memory_dtype
        self.feature_cache_size = max(1, feature_cache_size)
        self.objects: list[ObjectTrack] = []
        self.maskmem_pos: torch.Tensor | None = None  # [1, mem_dim, H, W], same for all frames
        self._features: OrderedDict[int, FrameFeatures] = OrderedDict()
        self._cursor: int | None = None  # last frame tracked by propagation

    # ------------------------------------------------------------------ objects
    @property
    def obj_ids(self) -> list:
        return [o.obj_id for o in self.objects]

    def object_index(self, obj_id, create: bool = False) -> int:
        for i, obj in enumerate(self.objects):
            if obj.obj_id == obj_id:
                return i
        if not create:
            raise KeyError(f"unknown object id {obj_id!r}; known ids: {self.obj_ids}")
        self.objects.append(ObjectTrack(obj_id))
        return len(self.objects) - 1

    def track(self, obj_id, create: bool = False) -> ObjectTrack:
        """The object with this id (KeyError naming the known ids; a new one with create=True)."""
        return self.objects[self.object_index(obj_id, create=create)]

    def remove(self, obj_id) -> None:
        """Forget an object and everything it holds (KeyError for an unknown id)."""
        del self.objects[self.object_index(obj_id)]

    def close(self) -> None:
        """Release the video (decoder thread, file handle) and all results."""
        self.reset()
        self._features.clear()
        self.frames.close()

    def __enter__(self) -> "VideoSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def reset(self) -> None:
        self.objects.clear()
        self._cursor = None

    # ------------------------------------------------------------------ frames and features
    def check_frame(self, frame_idx) -> int:
        if isinstance(frame_idx, bool) or not isinstance(frame_idx, (int, np.integer)):
            raise TypeError(f"frame_idx must be an int, got {type(frame_idx).__name__}")
        if not 0 <= frame_idx < self.num_frames:
            raise IndexError(f"frame_idx {frame_idx} is outside the video (frames 0..{self.num_frames - 1})")
        return int(frame_idx)

    @property
    def skipped_frames(self) -> list[int]:
        """Frames that could not be decoded and were not tracked."""
        return self.frames.skipped

    def cached_features(self, frame_idx: int) -> FrameFeatures | None:
        feats = self._features.get(frame_idx)
        if feats is not None:
            self._features.move_to_end(frame_idx)
        return feats

    def cache_features(self, frame_idx: int, feats: FrameFeatures) -> None:
        self._features[frame_idx] = feats
        self._features.move_to_end(frame_idx)
        while len(self._features) > self.feature_cache_size:
            self._features.popitem(last=False)

    # ------------------------------------------------------------------ prompts
    def add_points(self, obj_id, frame_idx: int, prompt: PointPrompt, extend: bool) -> ObjectTrack:
        """Give an object clicks (and/or a box) on a frame, replacing its mask prompt there;
        extend=True appends them to the clicks it already has on that frame."""
        obj = self.track(obj_id, create=True)
        old = obj._points.get(frame_idx) if extend else None
        obj._points[frame_idx] = prompt if old is None else old.extended(prompt.coords, prompt.labels)
        obj._masks.pop(frame_idx, None)
        return obj

    def add_mask(self, obj_id, frame_idx: int, mask: torch.Tensor) -> ObjectTrack:
        """Give an object a mask ([1, 1, S, S] binary) on a frame, replacing its clicks there."""
        obj = self.track(obj_id, create=True)
        obj._masks[frame_idx] = mask
        obj._points.pop(frame_idx, None)
        return obj

    def prompt_output(self, obj: ObjectTrack, frame_idx: int, output: FrameOutput, is_cond: bool) -> None:
        """Keep the output of an object's prompts on a frame, pending (not memory until `commit`)."""
        (obj._pending_cond if is_cond else obj._pending_non_cond)[frame_idx] = self.store(output)

    def has_pending_cond(self, frame_idx: int) -> bool:
        """Whether some object has an uncommitted conditioning prompt output on the frame."""
        return any(frame_idx in o._pending_cond for o in self.objects)

    def clear_prompts(self, obj_id, frame_idx: int) -> None:
        """Remove an object's prompts on a frame; its conditioning output there stays, as a
        tracked result (KeyError for an unknown id)."""
        obj = self.track(obj_id)
        for store in (obj._points, obj._masks, obj._pending_cond, obj._pending_non_cond):
            store.pop(frame_idx, None)
        out = obj._cond.pop(frame_idx, None)
        if out is not None:
            obj._non_cond[frame_idx] = out
            obj._tracked.pop(frame_idx, None)

    def commit(self, encode: Callable[[int, FrameOutput], tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Turn every pending prompt output into memory. encode(frame_idx, output) -> (spatial
        memory [1, mem_dim, H, W], its position encoding) is called for outputs not encoded yet.
        RuntimeError when there is no object, or an object without a conditioning frame."""
        if not self.objects:
            raise RuntimeError("no points, boxes or masks were added to any object; add prompts first")
        for obj in self.objects:
            for pending, conditioning in ((obj._pending_non_cond, False), (obj._pending_cond, True)):
                for f, out in pending.items():
                    if out.maskmem_features is None:
                        mem, self.maskmem_pos = encode(f, out)
                        out = self.store(FrameOutput(out.pred_masks, out.obj_ptr, out.object_score_logits, mem,
                                                     out.iou))
                    obj.remember(f, out, conditioning)
                pending.clear()
            if not obj._cond:
                raise RuntimeError(f"object id {obj.obj_id!r} has no points, box or mask; add prompts first")
            for f in obj._cond:
                obj._non_cond.pop(f, None)

    def first_cond_frame(self) -> int:
        """The earliest conditioning frame of any object (after `commit`)."""
        return min(t for o in self.objects for t in o._cond)

    # ------------------------------------------------------------------ outputs
    def store(self, output: FrameOutput) -> FrameOutput:
        """The form an output is kept in (storage device, memory dtype)."""
        mem = output.maskmem_features
        if mem is not None:
            mem = mem.to(device=self.storage_device, dtype=self.memory_dtype)
        return FrameOutput(output.pred_masks.to(self.storage_device), output.obj_ptr,
                           output.object_score_logits, mem, output.iou)

    def mark_tracked(self, obj: ObjectTrack, frame_idx: int, reverse: bool) -> None:
        """Note that propagation (in this direction) reached an object's conditioning frame."""
        obj._tracked[frame_idx] = reverse

    def store_tracked(self, obj: ObjectTrack, frame_idx: int, output: FrameOutput, reverse: bool) -> None:
        """Keep the output of tracking an object on a frame as its memory there."""
        obj.remember(frame_idx, self.store(output), conditioning=False)
        obj._tracked[frame_idx] = reverse

    def prune(self, current: int | None = None) -> None:
        """Drop non-conditioning outputs that no memory window can reach any more."""
        if current is not None:
            self._cursor = current
        anchors = [] if self._cursor is None else [self._cursor]
        for obj in self.objects:
            keep_near = anchors + list(obj._cond) + list(obj.prompt_frames())
            for t in list(obj._non_cond):
                if not any(abs(t - a) <= self.window for a in keep_near):
                    del obj._non_cond[t]

    def forget_tracked_before(self, frame_idx: int) -> None:
        """Forget on which frames before `frame_idx` objects were tracked (a stream, whose
        bookkeeping would otherwise grow with every frame, calls this)."""
        for obj in self.objects:
            for t in [t for t in obj._tracked if t < frame_idx]:
                del obj._tracked[t]

    def stored_outputs(self) -> int:
        """Number of per-object frame outputs held (for checking that memory stays bounded)."""
        return sum(len(o._cond) + len(o._non_cond) + len(o._pending_cond) + len(o._pending_non_cond)
                   for o in self.objects)
