"""The state of one video being segmented: frames, objects, prompts and a bounded output store.

Memory stays bounded by design. Per object, the store keeps
  - the outputs of its conditioning frames (frames with clicks, boxes or masks), for good;
  - non-conditioning outputs only within `window` frames of the frame being tracked, of the
    last frame tracked, and of each conditioning frame (so that tracking restarted from a
    prompted frame, in either direction, finds the memory the reference would find);
every other output is dropped as soon as tracking moves on. Image features live in a small
LRU cache; frames are decoded lazily by the frame source.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

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


@dataclass
class ObjectTrack:
    """One object: its prompts, its outputs, and which frames it has been tracked on."""

    obj_id: object
    points: dict[int, PointPrompt] = field(default_factory=dict)
    masks: dict[int, torch.Tensor] = field(default_factory=dict)  # frame -> [1, 1, S, S] binary
    cond: dict[int, FrameOutput] = field(default_factory=dict)
    non_cond: dict[int, FrameOutput] = field(default_factory=dict)
    # Outputs of prompts not yet turned into memory (committed when propagation starts).
    pending_cond: dict[int, FrameOutput] = field(default_factory=dict)
    pending_non_cond: dict[int, FrameOutput] = field(default_factory=dict)
    tracked: dict[int, bool] = field(default_factory=dict)  # frame -> tracked in reverse

    def prompt_frames(self) -> set[int]:
        return set(self.points) | set(self.masks)

    def clear_results(self) -> None:
        for store in (self.points, self.masks, self.cond, self.non_cond, self.pending_cond,
                      self.pending_non_cond, self.tracked):
            store.clear()


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
                 memory_dtype: torch.dtype = torch.float32, offload_video_to_cpu: bool = False) -> None:
        self.frames = frames
        self.num_frames = len(frames)
        self.video_height, self.video_width = frames.height, frames.width
        self.image_size = image_size
        self.device = device
        self.storage_device = storage_device
        self.window = window
        self.memory_dtype = memory_dtype
        self.offload_video_to_cpu = offload_video_to_cpu
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

    def remove(self, obj_id) -> None:
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

    # ------------------------------------------------------------------ outputs
    def store(self, output: FrameOutput) -> FrameOutput:
        """The form an output is kept in (storage device, memory dtype)."""
        mem = output.maskmem_features
        if mem is not None:
            mem = mem.to(device=self.storage_device, dtype=self.memory_dtype)
        return FrameOutput(output.pred_masks.to(self.storage_device), output.obj_ptr,
                           output.object_score_logits, mem)

    def prune(self, current: int | None = None) -> None:
        """Drop non-conditioning outputs that no memory window can reach any more."""
        if current is not None:
            self._cursor = current
        anchors = [] if self._cursor is None else [self._cursor]
        for obj in self.objects:
            keep_near = anchors + list(obj.cond) + list(obj.prompt_frames())
            for t in list(obj.non_cond):
                if not any(abs(t - a) <= self.window for a in keep_near):
                    del obj.non_cond[t]

    def stored_outputs(self) -> int:
        """Number of per-object frame outputs held (for checking that memory stays bounded)."""
        return sum(len(o.cond) + len(o.non_cond) + len(o.pending_cond) + len(o.pending_non_cond)
                   for o in self.objects)
