"""YOLO-seg (Ultralytics) label text: one line per object, and the class list.

    <class index> x1 y1 x2 y2 ... xn yn

Class indices are 0-based into the class list (`classes.txt`, one name a line); x and y are the
polygon's pixel coordinates divided by the image's width and height (0..1, six decimals). The
polygon is segapp.formats.polygons's (holes filled, tiny fragments dropped); an object in
several pieces is one ring with zero-width bridges between the pieces (polygons.join_rings),
since the format has one polygon a line. Empty masks get no line.

Classes follow the COCO export's categories (segapp.formats.coco.categories_from_labels:
first-seen order, "object" for an unlabelled object), so class index = COCO category id - 1.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from segapp.formats.coco import categories_from_labels, category_ids
from segapp.formats.polygons import MIN_RING_AREA, MIN_RING_POINTS, join_rings, mask_to_polygons

# Digits after the point of a normalised coordinate (1e-6 of a 10,000-pixel side is 0.01 pixel).
DECIMALS = 6


def class_list(labels: Sequence[str | None]) -> list[str]:
    """The class names, index = position: those of coco.categories_from_labels(labels)."""
    return [c["name"] for c in categories_from_labels(labels)]


def classes_text(classes: Sequence[str]) -> str:
    """`classes.txt`: one class name a line, in index order."""
    bad = [name for name in classes if not name or "\n" in name or "\r" in name]
    if bad:
        raise ValueError(f"a class name must be one non-empty line, got {bad[0]!r}")
    return "".join(f"{name}\n" for name in classes)


def read_classes(text: str) -> list[str]:
    """`classes.txt` text -> class names in index order (blank lines ignored)."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def label_lines(masks: Sequence[np.ndarray], labels: Sequence[str | None] | None = None, *,
                classes: Sequence[str] | None = None, min_area: float = MIN_RING_AREA,
                tolerance: float = 0.0) -> str:
    """The label file of one image: a line per non-empty [H, W] mask, in mask order.

    labels: each mask's class label (None: every object is class 0, "object"); classes: the
    class list the indices refer to (one for the whole data set), default class_list(labels).
    min_area, tolerance: the polygon rules of segapp.formats.polygons."""
    if labels is None:
        labels = [None] * len(masks)
    if len(labels) != len(masks):
        raise ValueError(f"{len(masks)} masks but {len(labels)} labels")
    classes = class_list(labels) if classes is None else list(classes)
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(classes)]
    indices = [cid - 1 for cid in category_ids(labels, categories)]
    lines = []
    for mask, index in zip(masks, indices):
        mask = np.asarray(mask, dtype=bool)
        ring = join_rings(mask_to_polygons(mask, min_area=min_area, tolerance=tolerance))
        if not ring:
            continue
        h, w = mask.shape
        xy = np.asarray(ring, dtype=np.float64).reshape(-1, 2) / np.array([w, h], dtype=np.float64)
        lines.append(" ".join([str(index)] + [f"{v:.{DECIMALS}f}" for v in xy.ravel()]))
    return "".join(f"{line}\n" for line in lines)


def read_label_lines(text: str, hw: tuple[int, int]) -> list[tuple[int, list[float]]]:
    """A YOLO-seg label file -> [(class index, ring [x0, y0, ...] in pixels of an H x W image)].
    ValueError naming the line for anything that is not that format."""
    h, w = hw
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            index, values = int(fields[0]), [float(v) for v in fields[1:]]
        except ValueError as err:
            raise ValueError(f"line {number}: expected a class index and numbers, got {line!r}") from err
        if index < 0 or len(values) % 2 or len(values) < 2 * MIN_RING_POINTS:
            raise ValueError(f"line {number}: expected a class index >= 0 and at least {MIN_RING_POINTS} "
                             f"x y pairs, got {line!r}")
        if not all(0.0 <= v <= 1.0 for v in values):
            raise ValueError(f"line {number}: coordinates must be normalised to 0..1, got {line!r}")
        xy = np.asarray(values, dtype=np.float64).reshape(-1, 2) * np.array([w, h], dtype=np.float64)
        out.append((index, xy.ravel().tolist()))
    return out
