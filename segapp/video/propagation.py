"""The propagation walk: track every object from one frame in one direction, then the other.

`VideoPredictor.propagate_in_video` walks one direction. The web demo (forward, then
backward, the model lock taken per frame, a stop button) and `segapp segment` (backward from
the first prompted frame, then forward) both need the two walks from one frame; this module
is that walk, written once. It yields exactly what the two `propagate_in_video` calls yield,
in order, so the start frame comes once per direction (each caller decides what to keep).
"""
from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import torch

FORWARD = "forward"
BACKWARD = "backward"
DIRECTIONS = (FORWARD, BACKWARD)


class PropagationStep(NamedTuple):
    """One tracked frame: unpacks as (frame_idx, obj_ids, logits, direction).

    logits: [num_objects, 1, H, W] float mask logits at video resolution, one row per id of
    obj_ids. direction: "forward" or "backward", the walk that produced the frame."""

    frame_idx: int
    obj_ids: list
    logits: torch.Tensor
    direction: str

    @property
    def reverse(self) -> bool:
        return self.direction == BACKWARD


def check_directions(directions: Sequence[str]) -> tuple[str, ...]:
    """The walks to run, in order: "forward" and/or "backward", each at most once."""
    if isinstance(directions, str):
        directions = (directions,)
    directions = tuple(directions)
    bad = [d for d in directions if d not in DIRECTIONS]
    if bad or not directions or len(set(directions)) != len(directions):
        raise ValueError(f"directions must be 'forward' and/or 'backward', each at most once, got {directions!r}")
    return directions


def walk_length(num_frames: int, start_frame_idx: int, directions: Sequence[str] = DIRECTIONS) -> int:
    """How many steps `propagate_both_ways` yields at most (frames that cannot be decoded are
    skipped): num_frames - start forward, start + 1 backward (the start frame in each walk),
    but nothing backward from frame 0 (`propagate_in_video` has no frame before it to track)."""
    counts = {FORWARD: num_frames - start_frame_idx, BACKWARD: start_frame_idx + 1 if start_frame_idx > 0 else 0}
    return sum(counts[d] for d in check_directions(directions))


def propagate_both_ways(
    predictor: Any,
    state: Any,
    start_frame_idx: int,
    *,
    directions: Sequence[str] = DIRECTIONS,
    lock: AbstractContextManager | None = None,
    should_stop: Callable[[], bool] | None = None,
    max_frame_num_to_track: int | None = None,
) -> Iterator[PropagationStep]:
    """Track the objects of `state` from `start_frame_idx` along each of `directions` in turn.

    predictor: a `VideoPredictor`; state: its session (`init_state`), prompts added.
    directions: the walks, in order: ("forward", "backward") as the demo does,
      ("backward", "forward") as `segment` does, or a single one.
    lock: entered around each frame's tracking step and left before the step is yielded, so
      that other users of the model (a demo's clicks) interleave with a long walk. It is
      entered once per frame, so it must be reusable (a `threading.Lock`, not a generator-based
      context manager).
    should_stop: asked before each frame; when it returns True the walk ends there (nothing
      more is tracked, the frames already yielded stay in the session).
    max_frame_num_to_track: passed to each walk (frames beyond the start, per direction).

    Yields `PropagationStep`s: what `propagate_in_video(state, start_frame_idx, reverse=...)`
    yields for each direction, in order, with the direction added."""
    for direction in check_directions(directions):
        frames = predictor.propagate_in_video(state, start_frame_idx=start_frame_idx,
                                              max_frame_num_to_track=max_frame_num_to_track,
                                              reverse=direction == BACKWARD)
        try:
            while True:
                if should_stop is not None and should_stop():
                    return
                if lock is None:
                    item = next(frames, None)
                else:
                    with lock:
                        item = next(frames, None)
                if item is None:
                    break
                frame_idx, obj_ids, logits = item
                yield PropagationStep(frame_idx, obj_ids, logits, direction)
        finally:
            frames.close()  # an early stop or a consumer that stops reading: end the walk's prefetch


__all__ = ["PropagationStep", "propagate_both_ways", "walk_length", "check_directions", "FORWARD", "BACKWARD"]
