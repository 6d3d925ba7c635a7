"""The box of a binary mask, in the three conventions segapp uses.

    mask_to_box       [x0, y0, x1, y1] ints, *inclusive* right/bottom pixel indices (SAM's
                      generator: a one-pixel mask at (3, 5) has box [3, 5, 3, 5])
    mask_to_xywh      COCO [x, y, w, h] ints, w and h in pixels (the one pixel: [3, 5, 1, 1])
    mask_to_edge_box  [x0, y0, x1, y1] float32 on pixel edges, x1 = rightmost column + 1
                      (a COCO bbox as xyxy; the one pixel: [3, 5, 4, 6]), used as a box prompt

An empty mask has the box [0, 0, 0, 0] in the first two; it has no edge box (ValueError).
The batched tensor form of the first is segapp.amg.batched_mask_to_box.
"""
from __future__ import annotations

import numpy as np


def _extent(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom) inclusive pixel indices of the set pixels, or None if empty."""
    mask = np.asarray(mask, dtype=bool)
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def mask_to_box(mask: np.ndarray) -> list[int]:
    """[H, W] bool -> [x0, y0, x1, y1] inclusive; [0, 0, 0, 0] if empty."""
    extent = _extent(mask)
    return [0, 0, 0, 0] if extent is None else list(extent)


def mask_to_xywh(mask: np.ndarray) -> list[int]:
    """[H, W] bool -> COCO [x, y, w, h] of its pixels (w, h in pixels); [0, 0, 0, 0] if empty."""
    extent = _extent(mask)
    if extent is None:
        return [0, 0, 0, 0]
    x0, y0, x1, y1 = extent
    return [x0, y0, x1 - x0 + 1, y1 - y0 + 1]


def mask_to_edge_box(mask: np.ndarray) -> np.ndarray:
    """[4] float32 xyxy box of a non-empty [H, W] bool mask, on pixel edges: x0 = leftmost
    column, x1 = rightmost column + 1 (as a COCO bbox). Raises ValueError for an empty mask."""
    extent = _extent(mask)
    if extent is None:
        raise ValueError("the mask is empty: it has no box")
    x0, y0, x1, y1 = extent
    return np.array([x0, y0, x1 + 1, y1 + 1], dtype=np.float32)
