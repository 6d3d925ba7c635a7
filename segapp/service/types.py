"""The services' value types: what a request changes and what a response reports.

Objects and snapshots are immutable, so that undo steps share mask arrays instead of copying
them; a `Timing` is the response of one step (its latency and a note for the user).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Timing:
    """Latency of the last step, in milliseconds; `cached` when the embedding was reused."""

    step: str
    ms: float
    cached: bool = False
    note: str = ""  # what the user should know about the result (e.g. that nothing was found)

    def __str__(self) -> str:
        text = f"{self.step}: {self.ms:.0f} ms" + (" (embedding cached)" if self.cached else "")
        return f"{text}. {self.note}" if self.note else text


@dataclass(frozen=True)
class ObjectState:
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

    @property
    def mask(self) -> np.ndarray | None:
        """[H, W] bool of the chosen candidate, or None."""
        return None if self.candidates is None else self.candidates[self.chosen]

    @property
    def has_prompts(self) -> bool:
        return bool(self.points) or self.box is not None


@dataclass(frozen=True)
class Snapshot:
    """Everything undo restores."""

    objects: tuple[ObjectState, ...]
    selected: int | None
    next_id: int
