"""Simulated clicks for interactive evaluation: each click at the centre of the larger error.

The "centre" of a region is the pixel farthest from its boundary, found with an exact Euclidean
distance transform. The region is padded with one pixel of background first, so that the image
border counts as boundary (a region touching the border does not get its click on the border).
Ties go to the first maximum in row-major order (`np.argmax`), so clicks are deterministic.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Click:
    """A click at integer pixel (x, y); positive adds to the object, negative removes from it."""

    x: int
    y: int
    positive: bool


def distance_to_boundary(region: np.ndarray) -> np.ndarray:
    """[H, W] float32: each pixel's Euclidean distance to the nearest pixel outside `region`,
    the image border counting as outside (0 outside the region).

    region: [H, W] bool
    """
    padded = np.pad(region.astype(np.uint8), 1, mode="constant", constant_values=0)
    # DIST_MASK_PRECISE: the exact Euclidean transform, not the 3x3/5x5 chamfer approximation.
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return dist[1:-1, 1:-1]


def region_centre(region: np.ndarray) -> tuple[int, int, float]:
    """(x, y, distance) of the pixel farthest from the boundary of `region` [H, W] bool
    (first maximum in row-major order); distance is 0 when the region is empty."""
    dist = distance_to_boundary(region)
    flat = int(np.argmax(dist))
    y, x = divmod(flat, region.shape[1])
    return x, y, float(dist[y, x])


def first_click(gt_mask: np.ndarray) -> Click:
    """The positive click at the centre of the object. gt_mask: [H, W] bool, not empty."""
    x, y, dist = region_centre(gt_mask)
    if dist == 0:
        raise ValueError("the ground-truth mask is empty: there is nowhere to click")
    return Click(x, y, True)


def next_click(gt_mask: np.ndarray, pred_mask: np.ndarray) -> Click | None:
    """The click that corrects the larger error of `pred_mask` against `gt_mask` ([H, W] bool).

    False negatives (object pixels missed) give a positive click at the centre of the false
    negatives; false positives a negative click at the centre of the false positives. The region
    whose centre lies farther from its boundary wins; on a tie the click is negative, as in
    RITM's clicker. Returns None when the prediction is already exact.
    """
    if gt_mask.shape != pred_mask.shape:
        raise ValueError(f"mask shapes differ: gt {gt_mask.shape}, prediction {pred_mask.shape}")
    fn_x, fn_y, fn_dist = region_centre(gt_mask & ~pred_mask)
    fp_x, fp_y, fp_dist = region_centre(pred_mask & ~gt_mask)
    if fn_dist == 0 and fp_dist == 0:
        return None
    if fn_dist > fp_dist:
        return Click(fn_x, fn_y, True)
    return Click(fp_x, fp_y, False)


def clicks_to_prompt(clicks: list[Click]) -> tuple[np.ndarray, np.ndarray]:
    """(point_coords [N, 2] float32 pixel xy, point_labels [N] int32: 1 positive, 0 negative)."""
    coords = np.array([[c.x, c.y] for c in clicks], dtype=np.float32).reshape(-1, 2)
    labels = np.array([1 if c.positive else 0 for c in clicks], dtype=np.int32)
    return coords, labels
