"""One user's video tab: the open video and its tracking state, the objects, the prompts given
on each frame and the masks found so far (as COCO RLE, so a long video stays small), with an
undo history of all of these.

Reached only through VideoService, which holds the session's lock around every change (but
`stop_requested`, which a Stop button sets while a propagation holds the lock).
"""
from __future__ import annotations

import collections
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from segapp.service import exports
from segapp.service.limits import DemoError
from segapp.service.types import QualityFlag, Timing


@dataclass(frozen=True)
class VideoObject(QualityFlag):
    """One tracked object; score: the predicted IoU of the mask its latest prompt gave (on
    frame score_frame), which flags it as the image tab flags its objects (QualityFlag)."""

    obj_id: int
    name: str
    color: tuple[int, int, int]
    label: str = ""  # the class label (free text; "" unlabelled), COCO's category
    score: float | None = None
    score_frame: int | None = None

    @property
    def where(self) -> str:
        return f"{self.name} on frame {self.score_frame}"


class FramePrompt(NamedTuple):
    """One object's prompts on one frame: clicks (pixels) with labels 1/0, and a box or None."""

    points: tuple[tuple[float, float], ...] = ()
    labels: tuple[int, ...] = ()
    box: tuple[float, float, float, float] | None = None


@dataclass(frozen=True)
class VideoSnapshot:
    """Everything undo restores in the video tab."""

    objects: tuple[VideoObject, ...]
    selected: int | None
    next_id: int
    prompts: dict
    results: dict


@dataclass
class VideoUserSession:
    """One user's video tab state (see the module docstring)."""

    session_id: str
    last_used: float
    path: Path | None = None
    state: Any = None  # segapp.video.session.VideoSession
    fps: float = 25.0
    objects: list[VideoObject] = field(default_factory=list)
    selected: int | None = None
    next_id: int = 1
    prompts: dict = field(default_factory=dict)  # (obj_id, frame) -> FramePrompt
    results: dict = field(default_factory=dict)  # frame -> {obj_id: RLE}
    timings: list[Timing] = field(default_factory=list)
    files: set[Path] = field(default_factory=set)  # deleted when the session closes (adopt_file)
    lock: threading.Lock = field(default_factory=threading.Lock)
    undo_stack: collections.deque = field(default_factory=collections.deque)
    redo_stack: list = field(default_factory=list)
    revision: int = 0  # changes with every edit of objects, prompts or masks
    tracked: dict = field(default_factory=dict)  # obj_id -> its prompts when last propagated
    stop_requested: threading.Event = field(default_factory=threading.Event)

    @property
    def num_frames(self) -> int:
        return 0 if self.state is None else self.state.num_frames

    @property
    def hw(self) -> tuple[int, int]:
        """(height, width) of the video's frames."""
        return self.state.video_height, self.state.video_width

    def close(self) -> None:
        if self.state is not None:
            self.state.frames.close()
            self.state = None

    def get_object(self, obj_id: int) -> VideoObject:
        for obj in self.objects:
            if obj.obj_id == obj_id:
                return obj
        raise DemoError(f"no object with id {obj_id} (objects: {[o.obj_id for o in self.objects]})")

    @property
    def quality_hints(self) -> list[str]:
        """One line per object whose latest prompt's mask the model rates poor."""
        return [o.quality_hint for o in self.objects if o.low_quality]

    def replace_object(self, obj: VideoObject) -> None:
        self.objects = [obj if o.obj_id == obj.obj_id else o for o in self.objects]

    def forget(self) -> None:
        """No objects, prompts, masks or history (a new video)."""
        self.objects, self.selected, self.next_id = [], None, 1
        self.prompts, self.results, self.timings, self.tracked = {}, {}, [], {}
        self.undo_stack.clear()
        self.redo_stack.clear()
        self.revision += 1

    # ------------------------------------------------------------------ masks
    def mask(self, frame_idx: int, obj_id: int) -> np.ndarray | None:
        """[H, W] bool of an object on a frame, or None where it has no mask yet."""
        rle = self.results.get(frame_idx, {}).get(obj_id)
        return None if rle is None else exports.decode_rle(rle)

    def store(self, frame_idx: int, obj_ids, logits) -> None:
        """Keep a frame's masks (logits [N, 1, H, W] for obj_ids) as RLE, replacing that frame's."""
        masks = (logits[:, 0] > 0).cpu().numpy()
        self.results[frame_idx] = {int(o): exports.encode_rle(m) for o, m in zip(obj_ids, masks)}
        self.revision += 1

    def ids_on(self, frame_idx: int) -> list[int]:
        """The ids of the objects with a mask on a frame, in the objects' order."""
        known = self.results.get(frame_idx, {})
        return [o.obj_id for o in self.objects if o.obj_id in known]

    def render(self, frame_idx: int, prompts: bool, size: tuple[int, int] | None = None,
               pending_corner: tuple[float, float] | None = None) -> np.ndarray:
        """[H, W, 3] uint8: the frame with the masks known on it (and, with prompts, the
        selected object's clicks and box on that frame, and pending_corner, the first corner of
        a half-drawn box, marked). size: (width, height) to scale the frame, masks and prompts
        to before drawing (much cheaper than drawing a large frame and scaling the picture)."""
        import cv2

        image = self.state.frames.get(frame_idx)
        if image is None:
            raise DemoError(f"frame {frame_idx} cannot be decoded")
        masks, colors = [], []
        for obj in self.objects:
            mask = self.mask(frame_idx, obj.obj_id)
            if mask is not None:
                masks.append(mask)
                colors.append(obj.color)
        prompt = FramePrompt()
        if prompts and self.selected is not None:
            prompt = self.prompts.get((self.selected, frame_idx), prompt)
        points, box = prompt.points, prompt.box
        if size is not None and tuple(size) != (image.shape[1], image.shape[0]):
            sx, sy = size[0] / image.shape[1], size[1] / image.shape[0]
            image = cv2.resize(image, tuple(size), interpolation=cv2.INTER_AREA)
            masks = [cv2.resize(m.astype(np.uint8), tuple(size), interpolation=cv2.INTER_NEAREST).astype(bool)
                     for m in masks]
            points = tuple((x * sx, y * sy) for x, y in points)
            box = None if box is None else (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
            pending_corner = None if pending_corner is None else (pending_corner[0] * sx, pending_corner[1] * sy)
        return exports.overlay(image, masks, colors, points=points, labels=prompt.labels, box=box,
                               pending_corner=pending_corner if prompts else None)

    # ------------------------------------------------------------------ history
    def snapshot(self) -> VideoSnapshot:
        return VideoSnapshot(tuple(self.objects), self.selected, self.next_id, dict(self.prompts),
                             {f: dict(m) for f, m in self.results.items()})

    def push_undo(self, max_history: int, before: VideoSnapshot | None = None) -> None:
        """Remember the current state (or `before`, taken earlier) for undo, before a change;
        drops the redo branch."""
        self.undo_stack.append(before or self.snapshot())
        while len(self.undo_stack) > max_history:
            self.undo_stack.popleft()
        self.redo_stack.clear()
        self.revision += 1

    def restore(self, snap: VideoSnapshot) -> None:
        self.objects, self.selected, self.next_id = list(snap.objects), snap.selected, snap.next_id
        self.prompts = dict(snap.prompts)
        self.results = {f: dict(m) for f, m in snap.results.items()}
        self.revision += 1

    def step_history(self, back: bool) -> bool:
        """Undo (back) or redo one step; False when there is none."""
        source, target = (self.undo_stack, self.redo_stack) if back else (self.redo_stack, self.undo_stack)
        if not source:
            return False
        target.append(self.snapshot())
        self.restore(source.pop())
        return True

    # ------------------------------------------------------------------ tracking
    def prompt_signature(self, obj_id: int) -> tuple:
        return tuple(sorted((f, p) for (o, f), p in self.prompts.items() if o == obj_id))

    def mark_tracked(self) -> None:
        """Every object's prompts as they are now were propagated."""
        self.tracked = {o.obj_id: self.prompt_signature(o.obj_id) for o in self.objects}

    def untracked(self) -> list[VideoObject]:
        """Objects with prompts added or changed since the last complete propagation (their
        masks exist only on the prompted frames, or are those of the old prompts)."""
        return [o for o in self.objects
                if self.prompt_signature(o.obj_id) and self.tracked.get(o.obj_id) != self.prompt_signature(o.obj_id)]
