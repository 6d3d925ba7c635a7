"""Tracking a live stream frame by frame (a camera, an RTSP/HTTP stream, a growing file).

    tracker = segapp.StreamTracker(video_predictor)        # or StreamTracker(model)
    frame_idx, obj_ids, logits = tracker.start(first_frame, {1: {"points": [[210, 350]], "labels": [1]}})
    for frame in camera:
        frame_idx, obj_ids, logits = tracker.step(frame)    # logits [objects, 1, H, W]

The same session, memory rules and tracking step as `VideoPredictor.propagate_in_video`, so a
stream's masks are those of the offline predictor on the same frames (for videos of at least
`max_obj_ptrs_in_encoder` frames: a stream has no known length, and the object-pointer
position encoding is scaled by min(length, that budget)). Memory stays constant however long
the stream runs: the session keeps only the memory window (segapp.video.session), the stream
source only its last few frames, and the per-object bookkeeping is pruned to the window.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Mapping

import numpy as np
import torch

from segapp.transforms import to_rgb_uint8
from segapp.video.frames import FrameSource
from segapp.video.predictor import VideoPredictor
from segapp.video.session import VideoSession
from segapp.video.tracker import memory_window

# The length a stream announces: unknown, so larger than any memory budget.
STREAM_NUM_FRAMES = 1 << 62
# Frames a stream source holds (the current one, and one for prompts given just after a step).
STREAM_KEEP_FRAMES = 2


class StreamFrames(FrameSource):
    """Frames pushed one at a time; only the last `keep` are held. Its length is unknown
    (`num_frames` is STREAM_NUM_FRAMES); `received` counts the frames pushed."""

    def __init__(self, first_frame, keep: int = STREAM_KEEP_FRAMES) -> None:
        super().__init__()
        frame = to_rgb_uint8(first_frame)
        self.height, self.width = frame.shape[:2]
        self.num_frames = STREAM_NUM_FRAMES
        self.keep = max(1, keep)
        self.received = 0
        self._frames: OrderedDict[int, np.ndarray] = OrderedDict()
        self.push(frame)

    def push(self, frame) -> int:
        """Add the next frame ([H, W, 3] uint8 RGB, or any form to_rgb_uint8 takes); returns its index."""
        index = self.received
        frame = self._check_size(to_rgb_uint8(frame), index, "stream")
        self._frames[index] = frame
        while len(self._frames) > self.keep:
            self._frames.popitem(last=False)
        self.received += 1
        return index

    def get(self, index: int) -> np.ndarray:
        index = self._check_index(index)
        if index >= self.received:
            raise IndexError(f"frame {index} of the stream has not been received yet ({self.received} so far)")
        frame = self._frames.get(index)
        if frame is None:
            raise IndexError(f"frame {index} of the stream is no longer held: a stream keeps only its "
                             f"last {self.keep} frames")
        return frame

    def close(self) -> None:
        self._frames.clear()


class StreamTracker:
    """Frame-by-frame tracking on constant memory, over a VideoPredictor's session machinery.

    Args:
      predictor: a VideoPredictor, or a SAM2Model (wrapped in a VideoPredictor with defaults).
      keep_frames: decoded frames held (prompts can be given on these frames only).
    """

    def __init__(self, predictor, keep_frames: int = STREAM_KEEP_FRAMES) -> None:
        self.predictor = predictor if isinstance(predictor, VideoPredictor) else VideoPredictor(predictor)
        self.keep_frames = keep_frames
        self.session: VideoSession | None = None
        self.frame_idx = -1

    @property
    def obj_ids(self) -> list:
        return [] if self.session is None else self.session.obj_ids

    def _require_started(self) -> VideoSession:
        if self.session is None:
            raise RuntimeError("the stream has not started: call start(first_frame, prompts) first")
        return self.session

    def prepare(self, frame) -> torch.Tensor:
        """The model input of a frame ([1, 3, S, S], host; pinned on CUDA): call it in the thread
        that reads the stream and pass it to `step(frame, prepared)`, so that resizing overlaps
        with tracking."""
        return self.predictor.prepare_frame(to_rgb_uint8(frame))

    def start(self, first_frame, prompts: Mapping[Any, Mapping[str, Any]] | None = None):
        """Open the stream on its first frame, with prompts {obj_id: {"points", "labels", "box",
        "mask"}} (as add_object takes them; none: objects can be added later). Returns
        (0, obj_ids, mask logits [objects, 1, H, W]) for the first frame."""
        self.close()
        frames = StreamFrames(first_frame, keep=self.keep_frames)
        p = self.predictor
        self.session = VideoSession(frames, p.image_size, p.device, p.device, window=memory_window(p.model),
                                    feature_cache_size=p.feature_cache_size, memory_dtype=p.memory_dtype)
        self.frame_idx = 0
        for obj_id, prompt in (prompts or {}).items():
            self.add_object(obj_id, **prompt)
        return self.current()

    def add_object(self, obj_id, points=None, labels=None, box=None, mask=None):
        """Prompt an object on the current frame: clicks (points [N, 2] xy with labels), a box
        [4] xyxy, or a mask [H, W] (not with clicks or a box). A new id starts a new object; a
        known one is corrected on this frame. Returns (frame_idx, obj_ids, mask logits)."""
        state = self._require_started()
        if mask is not None:
            if points is not None or box is not None:
                raise ValueError(f"object {obj_id!r}: give a mask, or points and/or a box, not both")
            return self.predictor.add_new_mask(state, self.frame_idx, obj_id, mask)
        return self.predictor.add_new_points_or_box(state, self.frame_idx, obj_id, points=points,
                                                    labels=labels, box=box)

    def remove_object(self, obj_id) -> None:
        """Stop tracking an object (KeyError for an unknown id)."""
        self._require_started().remove(obj_id)

    def current(self):
        """(frame_idx, obj_ids, mask logits [objects, 1, H, W]) of the current frame."""
        state = self._require_started()
        return self.frame_idx, state.obj_ids, self.predictor.frame_masks(state, self.frame_idx)

    @torch.inference_mode()
    def step(self, frame, prepared: torch.Tensor | None = None):
        """Track every object on the next frame. prepared: the frame's `prepare(frame)` when
        done elsewhere. Returns (frame_idx, obj_ids, mask logits [objects, 1, H, W])."""
        state = self._require_started()
        self.frame_idx = state.frames.push(frame)
        if not state.objects:
            return self.frame_idx, [], torch.zeros(0, 1, state.video_height, state.video_width,
                                                   device=self.predictor.device)
        self.predictor.commit_prompts(state)
        if prepared is not None:
            self.predictor.encode_frame(state, self.frame_idx, prepared)
        masks = self.predictor.track_frame(state, self.frame_idx)
        # Which frames each object was tracked on only matters within the memory window
        # (prompts on frames still held); older entries would grow with the stream.
        state.forget_tracked_before(self.frame_idx - state.window)
        return self.frame_idx, state.obj_ids, masks

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None
        self.frame_idx = -1


__all__ = ["StreamFrames", "StreamTracker", "STREAM_NUM_FRAMES"]
