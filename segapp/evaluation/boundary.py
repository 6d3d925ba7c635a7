"""Contour accuracy F: the boundary F-measure of the DAVIS benchmark, written from its definition.

Each mask becomes a one-pixel-wide boundary map (`boundary_map`); a boundary pixel of one mask
is *matched* when a boundary pixel of the other lies within a disk of radius
`ceil(0.008 x image diagonal)` pixels (8 pixels at 854x480). Precision is the share of the
prediction's boundary pixels that are matched, recall the share of the ground truth's, and F
their harmonic mean. These are the conventions of davis2017-evaluation (`bound_th = 0.008`)
and vos-benchmark, so numbers can be compared with published J&F.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

BOUNDARY_TOLERANCE = 0.008  # share of the image diagonal (DAVIS's bound_th)


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """[H, W] bool: pixels whose value differs from their east, south or south-east neighbour.

    This is the boundary map of the Berkeley benchmark's seg2bmap, which DAVIS uses: the
    boundary runs half a pixel towards the origin, so a foreground region gets background
    pixels on its top and left sides and its own pixels on its bottom and right sides. Pixels
    beyond the last row and column repeat the edge (the image border is not a boundary), so on
    the last row only the east neighbour counts, on the last column only the south one, and the
    bottom-right pixel is never a boundary.

    mask: [H, W] bool (or anything where nonzero is foreground).
    """
    seg = np.asarray(mask) != 0
    if seg.ndim != 2:
        raise ValueError(f"expected an [H, W] mask, got shape {seg.shape}")
    padded = np.pad(seg, ((0, 1), (0, 1)), mode="edge")
    east, south, south_east = padded[:-1, 1:], padded[1:, :-1], padded[1:, 1:]
    return (seg ^ east) | (seg ^ south) | (seg ^ south_east)


def tolerance_radius(height: int, width: int, bound_th: float = BOUNDARY_TOLERANCE) -> int:
    """Match radius in pixels: `bound_th` pixels when >= 1, else ceil(bound_th x diagonal)."""
    if bound_th >= 1:
        return int(math.ceil(bound_th))
    return int(math.ceil(bound_th * math.hypot(height, width)))


def disk(radius: int) -> np.ndarray:
    """[2r+1, 2r+1] uint8 structuring element: offsets (dy, dx) with dy² + dx² <= r²."""
    d = np.arange(-radius, radius + 1)
    return ((d[:, None] ** 2 + d[None, :] ** 2) <= radius**2).astype(np.uint8)


def boundary_precision_recall(pred: np.ndarray, gt: np.ndarray,
                              bound_th: float = BOUNDARY_TOLERANCE) -> tuple[float, float]:
    """(precision, recall) of the predicted boundary against the ground truth's.

    With no boundary on one side, DAVIS's conventions apply: no predicted boundary gives
    precision 1 (recall 0 unless the ground truth has none either); no ground-truth boundary
    gives recall 1 (precision 0 unless the prediction has none either).
    pred, gt: [H, W] bool of one size.
    """
    if pred.shape != gt.shape:
        raise ValueError(f"mask shapes differ: prediction {pred.shape}, ground truth {gt.shape}")
    pred_b, gt_b = boundary_map(pred), boundary_map(gt)
    n_pred, n_gt = int(np.count_nonzero(pred_b)), int(np.count_nonzero(gt_b))
    if n_pred == 0 or n_gt == 0:
        return (1.0 if n_pred == 0 else 0.0), (1.0 if n_gt == 0 else 0.0)
    # Dilating a boundary map by the disk marks every pixel within the radius of that boundary.
    kernel = disk(tolerance_radius(*gt.shape, bound_th))
    near_gt = cv2.dilate(gt_b.astype(np.uint8), kernel).astype(bool)
    near_pred = cv2.dilate(pred_b.astype(np.uint8), kernel).astype(bool)
    precision = np.count_nonzero(pred_b & near_gt) / n_pred
    recall = np.count_nonzero(gt_b & near_pred) / n_gt
    return float(precision), float(recall)


def boundary_f(pred: np.ndarray, gt: np.ndarray, bound_th: float = BOUNDARY_TOLERANCE) -> float:
    """Contour accuracy F = 2PR / (P + R) (0 when P + R = 0); 1 when neither mask has a boundary
    (both empty, or both full). pred, gt: [H, W] bool."""
    precision, recall = boundary_precision_recall(pred, gt, bound_th)
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)
