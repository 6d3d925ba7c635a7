"""One user's image tab: the image, its embedding (in a predictor of its own), the objects
as an immutable snapshot, and the undo and redo stacks.

Reached only through ImageService, which holds the session's lock around every change.
"""
from __future__ import annotations

import collections
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from segapp.service.limits import DemoError, Limits
from segapp.service.types import Downloads, ObjectState, Snapshot, Timing


@dataclass
class ImageSession:
    """One user's image tab state. Reached only through ImageService (which holds the locks)."""

    session_id: str
    last_used: float
    image: np.ndarray | None = None
    image_name: str = "image.png"
    image_key: str | None = None
    predictor: Any = None  # segapp.ImagePredictor holding this image's embedding
    state: Snapshot = Snapshot((), None, 1)
    undo_stack: collections.deque = field(default_factory=collections.deque)
    redo_stack: list = field(default_factory=list)
    pending_corner: tuple[float, float] | None = None
    timings: list[Timing] = field(default_factory=list)
    files: set[Path] = field(default_factory=set)  # deleted when the session closes (adopt_file)
    lock: threading.Lock = field(default_factory=threading.Lock)
    revision: int = 0  # changes with every edit of the objects (and a new image)
    labels_used: list[str] = field(default_factory=list)  # class labels given so far, first-seen order
    downloads: Downloads | None = None  # the files last written (ImageService.downloads)

    # ------------------------------------------------------------------ views
    @property
    def objects(self) -> tuple[ObjectState, ...]:
        return self.state.objects

    @property
    def selected(self) -> ObjectState | None:
        return next((o for o in self.state.objects if o.obj_id == self.state.selected), None)

    @property
    def masked_objects(self) -> list[ObjectState]:
        """The objects that have a mask, in order."""
        return [o for o in self.state.objects if o.mask is not None]

    def get_object(self, obj_id: int) -> ObjectState:
        for obj in self.state.objects:
            if obj.obj_id == obj_id:
                return obj
        raise DemoError(f"no object with id {obj_id} (objects: {[o.obj_id for o in self.state.objects]})")

    @property
    def quality_hints(self) -> list[str]:
        """One line per object whose mask the model rates poor (ObjectState.quality_hint)."""
        return [o.quality_hint for o in self.state.objects if o.low_quality]

    # ------------------------------------------------------------------ history
    def commit(self, new: Snapshot, limits: Limits) -> None:
        """Make `new` the current state, pushing the old one for undo. The oldest undo steps
        go when the session would exceed its memory limit; a state too big on its own is refused."""
        budget = limits.max_session_bytes
        if self.fixed_nbytes() + masks_nbytes([new]) > budget:
            raise DemoError(f"this session's masks would exceed its memory limit ({budget / 2**20:.0f} MB): "
                            "delete some objects or clear")
        self.undo_stack.append(self.state)
        while len(self.undo_stack) > limits.max_history:
            self.undo_stack.popleft()
        self.redo_stack.clear()
        self.state = new
        self.revision += 1
        while self.undo_stack and self.nbytes() > budget:
            self.undo_stack.popleft()

    def undo(self) -> bool:
        """Go back one step; False when there is nothing to undo."""
        self.pending_corner = None
        return self._step(self.undo_stack, self.redo_stack)

    def redo(self) -> bool:
        """Redo the last undone step; False when there is nothing to redo."""
        return self._step(self.redo_stack, self.undo_stack)

    def _step(self, source, target) -> bool:
        """Move to the state on top of `source`, pushing the current one onto `target` (undo
        and redo are this one step, mirrored); False when `source` is empty."""
        if not source:
            return False
        target.append(self.state)
        self.state = source.pop()
        self.revision += 1
        return True

    def remember_label(self, label: str) -> None:
        if label and label not in self.labels_used:
            self.labels_used.append(label)

    def nbytes(self) -> int:
        """Bytes held by the image, its embedding and every mask reachable from the history."""
        return self.fixed_nbytes() + masks_nbytes((self.state, *self.undo_stack, *self.redo_stack))

    def fixed_nbytes(self) -> int:
        """Bytes of the image and its embedding."""
        total = 0 if self.image is None else self.image.nbytes
        if self.predictor is not None:
            total += self.predictor.embedding_nbytes
        return total


def masks_nbytes(snapshots: Iterable[Snapshot]) -> int:
    """Bytes of the distinct mask arrays in some snapshots (undo steps share unchanged arrays)."""
    seen: dict[int, int] = {}
    for snap in snapshots:
        for obj in snap.objects:
            if obj.candidates is not None:
                seen[id(obj.candidates)] = obj.candidates.nbytes
    return sum(seen.values())
