"""Mask clean-up with OpenCV connected components: small holes and small islands ("sprinkles")."""
from __future__ import annotations

import cv2
import numpy as np
import torch

# How far past the threshold a flipped pixel's logit is pushed, so it stays flipped after resizing.
FLIP_MARGIN = 10.0


def small_components(binary: np.ndarray, max_area: float) -> np.ndarray:
    """[H, W] bool -> bool map of the 8-connected True components with area <= max_area."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary.astype(np.uint8), connectivity=8)
    small = np.zeros(n, dtype=bool)
    small[1:] = stats[1:, cv2.CC_STAT_AREA] <= max_area
    return small[labels]


def fill_holes_and_sprinkles(logits: torch.Tensor, threshold: float, max_hole_area: float,
                             max_sprinkle_area: float) -> torch.Tensor:
    """logits: [..., H, W]. Fills background components up to `max_hole_area` pixels and removes
    foreground components up to `max_sprinkle_area` pixels, by moving their logits across the
    threshold. Both kinds of component are found in the original logits (as the official
    predictor does), so filling a hole never turns a nearby island into a kept region.
    Returns a new tensor."""
    if max_hole_area <= 0 and max_sprinkle_area <= 0:
        return logits
    flat = logits.detach().float().cpu().reshape(-1, *logits.shape[-2:]).numpy().copy()
    for m in flat:
        holes = small_components(m <= threshold, max_hole_area) if max_hole_area > 0 else None
        islands = small_components(m > threshold, max_sprinkle_area) if max_sprinkle_area > 0 else None
        if holes is not None:
            m[holes] = threshold + FLIP_MARGIN
        if islands is not None:
            m[islands] = threshold - FLIP_MARGIN
    return torch.from_numpy(flat).reshape(logits.shape).to(device=logits.device, dtype=logits.dtype)
