"""8-connected components of binary masks: small holes and small islands ("sprinkles").

OpenCV labels the components on the CPU; the fixed-work tensor twin for accelerators is
segapp.postprocess.small_components_torch (tested equal to `small_components`).
"""
from __future__ import annotations

import cv2
import numpy as np


def component_areas(binary: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[H, W] bool -> (labels [H, W] int32, areas [n + 1] int): labels 1..n are the
    8-connected True components, 0 the False pixels; areas[k] is component k's pixel count
    (areas[0] is the count of False pixels)."""
    _, labels, stats, _ = cv2.connectedComponentsWithStats(np.asarray(binary, dtype=np.uint8), connectivity=8)
    return labels, stats[:, cv2.CC_STAT_AREA]


def small_components(binary: np.ndarray, max_area: float) -> np.ndarray:
    """[H, W] bool -> bool map of the 8-connected True components with area <= max_area."""
    labels, areas = component_areas(binary)
    small = areas <= max_area
    small[0] = False
    return small[labels]


def remove_small_regions(mask: np.ndarray, area_thresh: float, mode: str) -> tuple[np.ndarray, bool]:
    """Fill holes (mode "holes") or drop islands (mode "islands") smaller than area_thresh
    pixels (strictly, as SAM's generator) in a [H, W] bool mask, with 8-connected components.
    If every island is small, the largest one is kept. Returns (new mask, whether anything was small)."""
    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    mask = np.asarray(mask, dtype=bool)
    holes = mode == "holes"
    labels, areas = component_areas(~mask if holes else mask)
    sizes = areas[1:]  # label 0: pixels outside the region
    small = sizes < area_thresh
    if not small.any():
        return mask, False
    if holes:
        # Foreground stays; small background components become foreground.
        fill = np.concatenate(([True], small))
    else:
        fill = np.concatenate(([False], ~small))
        if not fill.any():
            fill[int(np.argmax(sizes)) + 1] = True
    return fill[labels], True
