"""One user's video tab: the open video and its tracking state, the objects, the clicks given
on each frame and the masks found so far (as COCO RLE, so a long video stays small).

Reached only through VideoService, which holds the session's lock around every change.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segapp.service import exports
from segapp.service.limits import DemoError
from segapp.service.types import Timing


@dataclass(frozen=True)
class VideoObject:
    obj_id: int
    name: str
    color: tuple[int, int, int]


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
    prompts: dict = field(default_factory=dict)  # (obj_id, frame) -> (points, labels)
    results: dict = field(default_factory=dict)  # frame -> {obj_id: RLE}
    timings: list[Timing] = field(default_factory=list)
    files: set[Path] = field(default_factory=set)  # deleted when the session closes (adopt_file)
    lock: threading.Lock = field(default_factory=threading.Lock)

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

    def mask(self, frame_idx: int, obj_id: int) -> np.ndarray | None:
        """[H, W] bool of an object on a frame, or None where it has no mask yet."""
        rle = self.results.get(frame_idx, {}).get(obj_id)
        return None if rle is None else exports.decode_rle(rle)

    def store(self, frame_idx: int, obj_ids, logits) -> None:
        """Keep a frame's masks (logits [N, 1, H, W] for obj_ids) as RLE, replacing that frame's."""
        masks = (logits[:, 0] > 0).cpu().numpy()
        self.results[frame_idx] = {int(o): exports.encode_rle(m) for o, m in zip(obj_ids, masks)}

    def ids_on(self, frame_idx: int) -> list[int]:
        """The ids of the objects with a mask on a frame, in the objects' order."""
        known = self.results.get(frame_idx, {})
        return [o.obj_id for o in self.objects if o.obj_id in known]

    def render(self, frame_idx: int, prompts: bool) -> np.ndarray:
        """[H, W, 3] uint8: the frame with the masks known on it (and, with prompts, the
        selected object's clicks on that frame)."""
        image = self.state.frames.get(frame_idx)
        if image is None:
            raise DemoError(f"frame {frame_idx} cannot be decoded")
        masks, colors = [], []
        for obj in self.objects:
            mask = self.mask(frame_idx, obj.obj_id)
            if mask is not None:
                masks.append(mask)
                colors.append(obj.color)
        points, labels = ((), ())
        if prompts and self.selected is not None:
            points, labels = self.prompts.get((self.selected, frame_idx), ((), ()))
        return exports.overlay(image, masks, colors, points=points, labels=labels)
