"""Mask clean-up: small holes and small islands ("sprinkles"), found as connected components.

On the CPU OpenCV labels the components (segapp.formats.components.small_components). On an
accelerator `small_components_torch` finds the small ones on the device, so that cleaning a mask
needs no copy to the host and no wait for it.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from segapp.formats.components import small_components

# How far past the threshold a flipped pixel's logit is pushed, so it stays flipped after resizing.
FLIP_MARGIN = 10.0


def small_components_torch(binary: torch.Tensor, max_area: int) -> torch.Tensor:
    """[N, H, W] bool -> bool map of the 8-connected True components with area <= max_area,
    on binary's device, with a fixed amount of work (no host synchronisation). The same map as
    `small_components` (OpenCV) per mask.

    How: every True pixel starts with its own flat index as label and takes the smallest label
    in its 3x3 neighbourhood, max_area - 1 times. A component of at most max_area pixels is at
    most max_area - 1 steps across, so its labels have all become its smallest index: the group
    of pixels holding that label is the whole component. A larger component may still hold
    several labels; each of its groups then touches a pixel of another label (a connected
    component cannot be split without a seam). So a label group is a small component exactly
    when it has at most max_area pixels and none of them has a differently labelled neighbour.
    """
    n, h, w = binary.shape
    if max_area <= 0 or binary.numel() == 0:
        return torch.zeros_like(binary)
    # float32 holds every index exactly up to 2**24 pixels; max pooling needs a float type.
    dtype = torch.float32 if h * w < (1 << 24) else torch.float64
    none = float(h * w)  # the label of pixels outside every component
    index = torch.arange(h * w, device=binary.device, dtype=dtype).view(1, 1, h, w)
    mask = binary[:, None]
    labels = torch.where(mask, index, none)
    for _ in range(max_area - 1):
        smallest = -F.max_pool2d(-labels, kernel_size=3, stride=1, padding=1)
        labels = torch.where(mask, smallest, none)
    smallest = -F.max_pool2d(-labels, kernel_size=3, stride=1, padding=1)
    largest = F.max_pool2d(torch.where(mask, labels, -1.0), kernel_size=3, stride=1, padding=1)
    seam = mask & ((smallest < labels) | (largest > labels))
    flat = labels.reshape(n, h * w).long().clamp(max=h * w - 1)  # outside pixels count 0 below
    inside = binary.reshape(n, h * w)
    counts = torch.zeros(n, h * w, device=binary.device).scatter_add_(1, flat, inside.float())
    seams = torch.zeros(n, h * w, device=binary.device).scatter_add_(1, flat, seam.reshape(n, h * w).float())
    small = (counts <= max_area) & (seams == 0)
    return (small.gather(1, flat) & inside).reshape(n, h, w)


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
