"""The services' value types: what a request changes and what a response reports.

Objects and snapshots are immutable, so that undo steps share mask arrays instead of copying
them. A `Timing` is the response of a step that ran the model (its latency, a note and a
warning for the user); a `Response` is the response of an action that may find nothing to do
(undo with an empty history, delete with nothing selected): it then carries a warning instead
of raising. Both carry the session's revision, which changes with every edit of the objects,
so a UI knows when its downloads are stale.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# An object whose chosen mask has a predicted IoU below this is flagged as probably poor.
LOW_QUALITY_IOU = 0.5
QUALITY_HINT = "add a click: positive on a part it misses, negative on a part it wrongly covers"
# Longest accepted object name or class label.
MAX_NAME_CHARS = 100


@dataclass
class Timing:
    """Latency of the last step, in milliseconds; `cached` when the embedding was reused."""

    step: str
    ms: float
    cached: bool = False
    note: str = ""  # what the user should know about the result
    warning: str = ""  # what went wrong for the user (e.g. that nothing was found, and why)
    revision: int = 0  # the session's revision after the step

    def __str__(self) -> str:
        text = f"{self.step}: {self.ms:.0f} ms" + (" (embedding cached)" if self.cached else "")
        return ". ".join(t for t in (text, self.note, self.warning) if t)


@dataclass(frozen=True)
class Response:
    """The response of an action: changed False (and falsy) when it found nothing to do, with
    `warning` saying why; revision: the session's revision after it."""

    changed: bool
    revision: int
    warning: str = ""

    def __bool__(self) -> bool:
        return self.changed


class QualityFlag:
    """An object's quality flag, the same on both tabs: the model's own predicted IoU of its
    mask (`score`, None before a prompt) below LOW_QUALITY_IOU flags it, with a hint naming it
    (`where`: its name; a video object adds the frame)."""

    @property
    def low_quality(self) -> bool:
        """Whether the model itself rates the mask poor (predicted IoU < LOW_QUALITY_IOU)."""
        return self.score is not None and self.score < LOW_QUALITY_IOU

    @property
    def quality_hint(self) -> str:
        """For a low-quality object, what the user sees and what to do; "" otherwise."""
        if not self.low_quality:
            return ""
        return f"{self.where}: predicted IoU {self.score:.2f} is low; {QUALITY_HINT}"

    @property
    def where(self) -> str:
        return self.name


@dataclass(frozen=True)
class ObjectState(QualityFlag):
    """One segmented object: its prompts and the mask candidates they gave (immutable, so
    undo snapshots share arrays instead of copying them).

    candidates: [C, H, W] bool, or None before the first prompt. scores: C predicted IoUs.
    """

    obj_id: int
    name: str
    color: tuple[int, int, int]
    points: tuple[tuple[float, float], ...] = ()
    labels: tuple[int, ...] = ()
    box: tuple[float, float, float, float] | None = None
    candidates: np.ndarray | None = field(default=None, repr=False, compare=False)
    scores: tuple[float, ...] = ()
    chosen: int = 0
    label: str = ""  # the class label (free text; "" unlabelled), COCO's category

    @property
    def mask(self) -> np.ndarray | None:
        """[H, W] bool of the chosen candidate, or None."""
        return None if self.candidates is None else self.candidates[self.chosen]

    @property
    def score(self) -> float | None:
        """The chosen mask's predicted IoU, or None before the first prompt."""
        return self.scores[self.chosen] if self.scores else None

    @property
    def has_prompts(self) -> bool:
        return bool(self.points) or self.box is not None


@dataclass(frozen=True)
class Snapshot:
    """Everything undo restores."""

    objects: tuple[ObjectState, ...]
    selected: int | None
    next_id: int


@dataclass(frozen=True)
class Downloads:
    """The download files of a session at one revision (written again when the revision
    changes). files: {kind: path}; empty when there is nothing to download. folder and kinds:
    where they were written and which were asked for."""

    revision: int
    files: dict[str, Path]
    folder: Path | None = None
    kinds: tuple[str, ...] = ()
