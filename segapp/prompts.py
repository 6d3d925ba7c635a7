"""Checks on user prompts (points, labels, boxes, object ids), shared by the image and video
predictors so that both accept exactly the same input and name the same problems.

Public point labels: 1 foreground, 0 background, -1 padding (an ignored point, so that point
sets of different lengths stack into one [B, N] array). Labels 2 and 3 mark a box's two corners
inside the model; they are made from the `box` argument and are refused as user labels (the
reference passes any label through unchecked, and a stray 2 silently turns a click into half a
box).
"""
from __future__ import annotations

import numbers

import numpy as np

PUBLIC_LABELS = (-1, 0, 1)
BOX_CORNER_LABELS = (2, 3)


def check_points(point_coords, point_labels, image_hw: tuple[int, int], normalize_coords: bool = True,
                 names: tuple[str, str] = ("point_coords", "point_labels")) -> tuple[np.ndarray, np.ndarray]:
    """Validate clicks: point_coords [N, 2] or [B, N, 2] xy (pixels of an image of size
    `image_hw` (H, W), or relative in [0, 1] with normalize_coords=False), point_labels [N] or
    [B, N] in PUBLIC_LABELS. Returns (coords [B, N, 2] float64, labels [B, N] int64).
    Raises ValueError naming the argument and the problem."""
    coords_name, labels_name = names
    if point_labels is None:
        raise ValueError(f"{labels_name} must be supplied if {coords_name} is supplied.")
    pc = _as_float(point_coords, coords_name)
    try:
        pl = np.asarray(point_labels)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{labels_name} must be an array of integers ({err})") from err
    if pc.ndim == 2:
        pc = pc[None]
    if pl.ndim == 1:
        pl = pl[None]
    if pc.ndim != 3 or pc.shape[-1] != 2:
        raise ValueError(f"{coords_name} must have shape [N, 2] or [B, N, 2], got {np.shape(point_coords)}")
    if pl.shape != pc.shape[:2]:
        raise ValueError(f"{labels_name} shape {np.shape(point_labels)} does not match {coords_name} "
                         f"shape {np.shape(point_coords)} (one label per point)")
    if pc.shape[1] == 0:
        raise ValueError(f"{coords_name} is empty; pass None for no points")
    check_finite(pc, coords_name)
    check_inside(pc.reshape(-1, 2), _limit(image_hw, normalize_coords), coords_name)
    if pl.dtype.kind not in "biuf" or not np.isin(pl, PUBLIC_LABELS).all():
        found = np.unique(pl).tolist()
        hint = ""
        if pl.dtype.kind in "biuf" and np.isin(pl, BOX_CORNER_LABELS).any():
            hint = " (2 and 3 mark box corners inside the model: pass the box as `box`)"
        raise ValueError(f"{labels_name} must be 1 (foreground), 0 (background) or -1 (padding); "
                         f"got {found}{hint}")
    return pc, pl.astype(np.int64)


def check_boxes(box, image_hw: tuple[int, int], normalize_coords: bool = True, name: str = "box") -> np.ndarray:
    """Validate boxes: [4] or [B, 4] (x0, y0, x1, y1) with x0 <= x1 and y0 <= y1, inside the
    image (pixels, or relative with normalize_coords=False). Returns [B, 4] float64."""
    bx = _as_float(box, name)
    if bx.ndim == 1:
        bx = bx[None]
    if bx.ndim != 2 or bx.shape[-1] != 4:
        raise ValueError(f"{name} must have shape [4] or [B, 4] (x0, y0, x1, y1), got {np.shape(box)}")
    check_finite(bx, name)
    bad = np.nonzero((bx[:, 2] < bx[:, 0]) | (bx[:, 3] < bx[:, 1]))[0]
    if len(bad):
        raise ValueError(f"{name} {bx[bad[0]].tolist()} has x1 < x0 or y1 < y0; boxes are (x0, y0, x1, y1)")
    check_inside(bx.reshape(-1, 2), _limit(image_hw, normalize_coords), name)
    return bx


def check_obj_id(obj_id) -> int | str:
    """An object id as the video predictor stores it: an int (NumPy integers become int) or a
    str. None, bools, floats and containers are refused: ids are compared and returned as
    given, so they must be plain, hashable and unambiguous."""
    if isinstance(obj_id, numbers.Integral) and not isinstance(obj_id, (bool, np.bool_)):
        return int(obj_id)
    if isinstance(obj_id, str):
        return obj_id
    raise ValueError(f"obj_id must be an int or a str, got {obj_id!r} ({type(obj_id).__name__})")


def check_finite(values: np.ndarray, name: str) -> None:
    if not np.isfinite(values).all():
        raise ValueError(f"{name} contains NaN or infinite values")


def check_inside(xy: np.ndarray, limit: np.ndarray, name: str) -> None:
    """Points may lie anywhere on the image, edges included: 0 <= x <= W, 0 <= y <= H."""
    outside = (xy < 0).any(axis=1) | (xy > limit).any(axis=1)
    if outside.any():
        first = xy[np.argmax(outside)].tolist()
        raise ValueError(f"{name} has a point {first} outside the image (0..{limit[0]:g} x 0..{limit[1]:g})")


def _limit(image_hw: tuple[int, int], normalize_coords: bool) -> np.ndarray:
    h, w = image_hw
    return np.array([float(w), float(h)]) if normalize_coords else np.array([1.0, 1.0])


def _as_float(values, name: str) -> np.ndarray:
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be numbers, got {values!r:.80} ({err})") from err
