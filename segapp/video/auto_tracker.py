"""Track everything in a video: segment everything every K frames, track all objects between.

    tracker = segapp.VideoAutoTracker(video_predictor, every=10)
    for frame_idx, obj_ids, logits in tracker.track("clip.mp4"):   # or a list of frames, a stream
        masks = logits[:, 0] > 0                                    # [objects, H, W]

On the first frame and every `every` frames the automatic mask generator ("segment
everything") proposes masks; a proposal that the tracked objects cover by at most
`new_object_coverage` of its area becomes a new object (prompted with its mask on that frame).
Between, all objects are tracked frame by frame with SAM 2 memory (segapp.video.stream, so a
long video or a live stream runs on constant memory). Two tracked objects whose masks overlap
by more than `merge_iou` (mask IoU) are one object: the younger is dropped and the older keeps
its id. An object absent (empty mask) for `drop_after` frames in a row is dropped. Object ids
are 1, 2, ... in order of appearance and never reused, so an id names one object throughout.

The decisions are pure functions of masks (`mask_iou`, `coverage`, `select_new`,
`duplicates`, `vanished`), tested on given masks.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np
import torch

logger = logging.getLogger(__name__)

# Segment everything on every K-th frame (the first frame always).
DEFAULT_EVERY = 10
# A proposal covered by tracked objects on at most this fraction of its area is a new object.
DEFAULT_NEW_OBJECT_COVERAGE = 0.3
# Tracked masks overlapping by more than this IoU are one object.
DEFAULT_MERGE_IOU = 0.7
# Frames in a row an object may be absent before it is dropped.
DEFAULT_DROP_AFTER = 15
# Proposals smaller than this many pixels are ignored.
DEFAULT_MIN_AREA = 16
# Objects tracked at once at most (new proposals wait while this many are tracked).
DEFAULT_MAX_OBJECTS = 64


# ---------------------------------------------------------------------------- pure decisions
def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a: [N, H, W] bool, b: [M, H, W] bool -> [N, M] IoU (0 where both are empty)."""
    a = a.flatten(1).float()
    b = b.flatten(1).float()
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))


def coverage(candidates: torch.Tensor, tracked: torch.Tensor) -> torch.Tensor:
    """Fraction of each candidate's area that the union of tracked masks covers.
    candidates: [M, H, W] bool; tracked: [N, H, W] bool (N may be 0) -> [M] (1 for empty ones)."""
    area = candidates.flatten(1).sum(1).float()
    if tracked.shape[0] == 0:
        covered = torch.zeros_like(area)
    else:
        union = tracked.any(dim=0)
        covered = (candidates & union).flatten(1).sum(1).float()
    return torch.where(area > 0, covered / area.clamp(min=1), torch.ones_like(area))


def select_new(candidates: torch.Tensor, tracked: torch.Tensor, max_coverage: float,
               min_area: int = 1) -> list[int]:
    """Indices of candidates that become new objects, in the order given (callers pass the
    largest first): at least `min_area` pixels and covered by at most `max_coverage` of their
    area by the tracked masks and by the candidates chosen before them (so two proposals of
    one object give one new object)."""
    chosen: list[int] = []
    covered = tracked.any(dim=0) if tracked.shape[0] else torch.zeros(candidates.shape[1:], dtype=torch.bool,
                                                                        device=candidates.device)
    for i in range(candidates.shape[0]):
        mask = candidates[i]
        area = int(mask.sum())
        if area < max(1, min_area):
            continue
        if float((mask & covered).sum()) / area <= max_coverage:
            chosen.append(i)
            covered = covered | mask
    return chosen


def duplicates(masks: torch.Tensor, ids: list, merge_iou: float) -> list:
    """Ids to drop so that no two of the remaining masks overlap by more than `merge_iou`: of
    each such pair the one later in `ids` (the younger object) goes, the older stays."""
    if masks.shape[0] < 2:
        return []
    iou = mask_iou(masks, masks)
    dropped: set[int] = set()
    for j in range(1, len(ids)):
        for i in range(j):
            if i not in dropped and float(iou[i, j]) > merge_iou:
                dropped.add(j)
                break
    return [ids[j] for j in sorted(dropped)]


def vanished(absent_for: dict, drop_after: int) -> list:
    """Ids absent for at least `drop_after` frames in a row ({id: frames absent})."""
    return [obj_id for obj_id, n in absent_for.items() if n >= drop_after]


def update_absence(absent_for: dict, ids: list, present: list[bool]) -> dict:
    """{id: frames absent in a row} after one more frame where `present[k]` says whether
    ids[k] has a non-empty mask (ids no longer tracked are forgotten)."""
    return {obj_id: 0 if here else absent_for.get(obj_id, 0) + 1 for obj_id, here in zip(ids, present)}


# ---------------------------------------------------------------------------- the tracker
@dataclass
class AutoTrackStats:
    """What a run did: objects added, merged (dropped as duplicates) and dropped as vanished."""

    added: list = field(default_factory=list)
    merged: list = field(default_factory=list)
    vanished: list = field(default_factory=list)
    proposals_run: int = 0


class VideoAutoTracker:
    """Segment and track everything in a video, with stable object ids.

    Args:
      predictor: a VideoPredictor, or a SAM2Model (wrapped in one).
      generator: proposes masks on a frame: an object with `generate(image) -> [{"segmentation":
        [H, W] bool, ...}]` (an AutomaticMaskGenerator); default: AutomaticMaskGenerator on the
        predictor's model with `points_per_side`.
      every: run the generator on the first frame and every `every` frames.
      new_object_coverage, merge_iou, drop_after, min_area, max_objects: see the module doc.
      stream_tracker: the frame-by-frame tracker (default: a StreamTracker on the predictor).
    """

    def __init__(self, predictor=None, generator=None, every: int = DEFAULT_EVERY,
                 new_object_coverage: float = DEFAULT_NEW_OBJECT_COVERAGE, merge_iou: float = DEFAULT_MERGE_IOU,
                 drop_after: int = DEFAULT_DROP_AFTER, min_area: int = DEFAULT_MIN_AREA,
                 max_objects: int = DEFAULT_MAX_OBJECTS, points_per_side: int = 32, stream_tracker=None) -> None:
        if every < 1:
            raise ValueError(f"every must be at least 1 (frames between segment-everything runs), got {every}")
        if drop_after < 1:
            raise ValueError(f"drop_after must be at least 1 frame, got {drop_after}")
        if not 0.0 <= new_object_coverage < 1.0:
            raise ValueError(f"new_object_coverage must be in [0, 1), got {new_object_coverage}")
        if not 0.0 < merge_iou <= 1.0:
            raise ValueError(f"merge_iou must be in (0, 1], got {merge_iou}")
        if max_objects < 1:
            raise ValueError(f"max_objects must be at least 1, got {max_objects}")
        if stream_tracker is None:
            from segapp.video.stream import StreamTracker

            if predictor is None:
                raise ValueError("give a VideoPredictor (or a model), or a stream_tracker")
            stream_tracker = StreamTracker(predictor)
        if generator is None:
            from segapp.automatic_mask_generator import AutomaticMaskGenerator

            generator = AutomaticMaskGenerator(stream_tracker.predictor.model, points_per_side=points_per_side,
                                               output_mode="binary_mask")
        self.tracker = stream_tracker
        self.generator = generator
        self.every = every
        self.new_object_coverage = new_object_coverage
        self.merge_iou = merge_iou
        self.drop_after = drop_after
        self.min_area = min_area
        self.max_objects = max_objects
        self.stats = AutoTrackStats()

    def _proposals(self, frame: np.ndarray, device) -> torch.Tensor:
        """[M, H, W] bool proposals on a frame, largest first."""
        records = self.generator.generate(frame)
        self.stats.proposals_run += 1
        masks = [np.asarray(r["segmentation"], dtype=bool) for r in records]
        masks.sort(key=lambda m: -int(m.sum()))
        if not masks:
            return torch.zeros(0, *frame.shape[:2], dtype=torch.bool, device=device)
        return torch.from_numpy(np.stack(masks)).to(device)

    def track(self, video: Iterable | str) -> Iterator[tuple[int, list, torch.Tensor]]:
        """Yield (frame_idx, obj_ids, mask logits [objects, 1, H, W]) for every frame of `video`
        (a path, a folder, a list of frames, or any iterable of [H, W, 3] uint8 RGB frames, such as
        a live stream). Unreadable frames of a file are skipped (not yielded), as in
        propagate_in_video; frame_idx is the frame's index in the video."""
        from segapp.transforms import to_rgb_uint8

        self.stats = AutoTrackStats()
        next_id = 1
        absent_for: dict = {}
        for count, (frame_idx, frame) in enumerate(_frames_of(video)):
            frame = to_rgb_uint8(frame)
            if count == 0:
                _, obj_ids, logits = self.tracker.start(frame, None)
            else:
                _, obj_ids, logits = self.tracker.step(frame)
            masks = logits[:, 0] > 0
            if count % self.every == 0:
                proposals = self._proposals(frame, masks.device)
                room = self.max_objects - len(obj_ids)
                for i in select_new(proposals, masks, self.new_object_coverage, self.min_area)[:max(0, room)]:
                    self.tracker.add_object(next_id, mask=proposals[i].cpu().numpy())
                    self.stats.added.append((frame_idx, next_id))
                    next_id += 1
                _, obj_ids, logits = self.tracker.current()
                masks = logits[:, 0] > 0
            merged = duplicates(masks, list(obj_ids), self.merge_iou)
            for obj_id in merged:
                self.tracker.remove_object(obj_id)
                self.stats.merged.append((frame_idx, obj_id))
            present = masks.flatten(1).any(dim=1).tolist()
            absent_for = update_absence(absent_for, list(obj_ids), present)
            absent_for = {k: v for k, v in absent_for.items() if k not in merged}
            gone = vanished(absent_for, self.drop_after)
            for obj_id in gone:
                self.tracker.remove_object(obj_id)
                self.stats.vanished.append((frame_idx, obj_id))
            dropped = set(gone) | set(merged)
            if dropped:
                keep = [k for k, obj_id in enumerate(obj_ids) if obj_id not in dropped]
                obj_ids = [obj_ids[k] for k in keep]
                logits = logits[keep]
                absent_for = {k: v for k, v in absent_for.items() if k not in dropped}
            yield frame_idx, list(obj_ids), logits

    def close(self) -> None:
        self.tracker.close()


def _frames_of(video) -> Iterator[tuple[int, np.ndarray]]:
    """(index, frame) of a path, folder, FrameSource or list (readable frames, in order; an
    unreadable one is skipped and keeps its index free), or of any iterable of frames."""
    import os

    from segapp.video.frames import FrameSource, open_frames

    if isinstance(video, (str, os.PathLike, FrameSource)) or isinstance(video, (list, tuple)) or (
            isinstance(video, np.ndarray) and video.ndim == 4):
        source = open_frames(video)
        try:
            for i in range(len(source)):
                frame = source.get(i)
                if frame is not None:
                    yield i, frame
        finally:
            if source is not video:
                source.close()
        return
    yield from enumerate(video)


__all__ = ["VideoAutoTracker", "AutoTrackStats", "mask_iou", "coverage", "select_new", "duplicates",
           "vanished", "update_absence"]
