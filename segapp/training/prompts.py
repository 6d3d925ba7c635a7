"""Simulated prompts for training, as SAM and SAM 2 are trained.

Every function works on a batch of P prompts in model-input pixels (x right, y down, the
[H, W] grid of the target masks) and draws its randomness from a `torch.Generator`, so a
training run is reproducible and resumable.

- the first prompt of an instance: its box, each side jittered by up to 10% of the box's
  side and at most a fixed number of pixels (SAM 2: 20 px at 1024), or one positive point
  drawn uniformly from the mask;
- each later round: one corrective click drawn uniformly from the error region of the
  previous prediction, positive on a false negative (the object was missed there),
  negative on a false positive.
"""
from __future__ import annotations

from typing import Callable

import torch

from segapp.amg import batched_mask_to_box
from segapp.modeling.prompt_encoder import (LABEL_BOX_BOTTOM_RIGHT, LABEL_BOX_TOP_LEFT, LABEL_NEGATIVE,
                                            LABEL_PAD, LABEL_POSITIVE)

# Box jitter of SAM 2's training: uniform noise of at most this fraction of the box's width
# (height) per side, and at most BOX_NOISE_MAX_PX pixels at a 1024-pixel input.
BOX_NOISE_FRACTION = 0.1
BOX_NOISE_MAX_PX = 20.0
BOX_NOISE_REFERENCE_SIZE = 1024


def boxes_from_masks(masks: torch.Tensor) -> torch.Tensor:
    """masks: [P, H, W] bool -> [P, 4] float xyxy, the tight box in COCO's convention
    (x1 = last column + 1), as the evaluation's box prompts are; all zeros for empty masks."""
    inclusive = batched_mask_to_box(masks).float()  # [P, 4], right/bottom inclusive; zeros if empty
    edges = inclusive + torch.tensor([0.0, 0.0, 1.0, 1.0], device=masks.device)
    return torch.where(masks.flatten(1).any(dim=1, keepdim=True), edges, torch.zeros_like(edges))


def jitter_boxes(boxes: torch.Tensor, image_size: int, generator: torch.Generator | None = None,
                 fraction: float = BOX_NOISE_FRACTION, max_px: float | None = None,
                 uniform: torch.Tensor | None = None) -> torch.Tensor:
    """Move each side of each box [P, 4] xyxy by uniform noise in [-d, d], d = min(fraction *
    side length, max_px); clamp to the image and keep x0 <= x1, y0 <= y1.

    max_px defaults to SAM 2's 20 px scaled from 1024 to `image_size`. uniform: the [P, 4]
    numbers in [0, 1) to use instead of drawing them from `generator` (`draw_uniform`).
    """
    if max_px is None:
        max_px = BOX_NOISE_MAX_PX * image_size / BOX_NOISE_REFERENCE_SIZE
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    dx = (w * fraction).clamp(max=max_px)
    dy = (h * fraction).clamp(max=max_px)
    bound = torch.stack([dx, dy, dx, dy], dim=1)
    if uniform is None:
        uniform = draw_uniform(generator, boxes.shape, boxes.device, torch.float32)
    noise = uniform * 2 - 1
    out = (boxes + noise * bound).clamp(0, image_size)
    x0, x1 = torch.minimum(out[:, 0], out[:, 2]), torch.maximum(out[:, 0], out[:, 2])
    y0, y1 = torch.minimum(out[:, 1], out[:, 3]), torch.maximum(out[:, 1], out[:, 3])
    return torch.stack([x0, y0, x1, y1], dim=1)


def draw_uniform(generator: torch.Generator | None, shape, device, dtype: torch.dtype) -> torch.Tensor:
    """The uniform numbers a prompt function draws: [P, 4] float32 for `jitter_boxes`, [P]
    float64 (POINT_DRAW_DTYPE) for a point. Drawn ahead for several rounds in the order of use,
    they are the numbers the rounds would draw one after the other."""
    return torch.rand(shape, generator=generator, device=device, dtype=dtype)


# dtype of the one uniform number per point (float64: k = floor(u * count) for any count).
POINT_DRAW_DTYPE = torch.float64


def sample_points(regions: torch.Tensor, generator: torch.Generator | None = None,
                  uniform: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One pixel drawn uniformly from each region.

    regions: [P, H, W] bool -> (xy [P, 2] float pixel indices, found [P] bool; False, with xy 0,
    where a region is empty). One uniform number u per region picks its k-th pixel in raster
    order, k = floor(u * count). Found in two short searches instead of one over all H * W
    pixels: the running count of region pixels per row first reaches k + 1 at the pixel's row,
    and the running count along that row at its column (binary searches of cumulative sums).
    One random number per region instead of one per pixel, and no host synchronisation.
    uniform: the [P] numbers (POINT_DRAW_DTYPE) to use instead of drawing them from `generator`.
    """
    rows = torch.arange(regions.shape[0], device=regions.device)
    return _sample_by_rows(regions.sum(dim=2, dtype=torch.int32), lambda row: regions[rows, row], generator,
                           uniform)


def _sample_by_rows(row_counts: torch.Tensor, line: Callable[[torch.Tensor], torch.Tensor],
                    generator: torch.Generator | None, uniform: torch.Tensor | None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """sample_points from the regions' pixel counts per row [P, H] (int32) and `line(row)`, the
    row [P] of each region as [P, W] bool."""
    p, h = row_counts.shape
    rows_running = row_counts.cumsum(dim=1, dtype=torch.int32)  # [P, H], nondecreasing
    count = rows_running[:, -1]
    found = count > 0
    u = draw_uniform(generator, (p,), row_counts.device, POINT_DRAW_DTYPE) if uniform is None else uniform
    k = (u * count).to(torch.int32).clamp(max=(count - 1).clamp(min=0))
    row = torch.searchsorted(rows_running, (k + 1)[:, None]).clamp(max=h - 1)  # [P, 1]
    earlier = rows_running.gather(1, row) - row_counts.gather(1, row)  # region pixels in the rows above
    running = line(row[:, 0]).cumsum(dim=1, dtype=torch.int32)  # [P, W]
    col = torch.searchsorted(running, (k[:, None] - earlier + 1).to(torch.int32)).clamp(max=running.shape[1] - 1)
    xy = torch.cat([col, row], dim=1).float()
    return torch.where(found[:, None], xy, torch.zeros_like(xy)), found


def box_prompts(masks: torch.Tensor, generator: torch.Generator | None = None,
                max_px: float | None = None, uniform: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Jittered boxes of masks [P, H, W] as corner points: ([P, 2, 2] xy, [P, 2] labels 2, 3)."""
    size = masks.shape[-1]
    boxes = jitter_boxes(boxes_from_masks(masks), size, generator, max_px=max_px, uniform=uniform)
    labels = torch.tensor([LABEL_BOX_TOP_LEFT, LABEL_BOX_BOTTOM_RIGHT], device=masks.device)
    return boxes.reshape(-1, 2, 2), labels.expand(masks.shape[0], 2).clone()


def point_prompts(masks: torch.Tensor, generator: torch.Generator | None = None,
                  uniform: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One positive point inside each mask [P, H, W]: ([P, 1, 2] xy, [P, 1] labels; padding
    label -1 for an empty mask)."""
    xy, found = sample_points(masks, generator, uniform)
    labels = torch.where(found, LABEL_POSITIVE, LABEL_PAD)
    return xy[:, None], labels[:, None].long()


def corrective_clicks(targets: torch.Tensor, predictions: torch.Tensor,
                      generator: torch.Generator | None = None,
                      target_row_counts: torch.Tensor | None = None, uniform: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """One corrective click per prompt, drawn uniformly from the error region.

    targets, predictions: [P, H, W] bool -> ([P, 1, 2] xy, [P, 1] labels): positive (1) on a
    false negative, negative (0) on a false positive. Where the prediction is exact, a positive
    point inside the target (a padding point, label -1, when the target is empty too).
    All on the device, without a host synchronisation: the region drawn from is the error
    region where there is one and the target elsewhere (`sample_points` of that region, the same
    draw, without building the region: its per-row counts are chosen between the error's and
    the target's, and so is the one row searched).
    target_row_counts: `targets.sum(dim=2, dtype=torch.int32)`, when the caller keeps it for
    several rounds on the same targets. uniform: see sample_points.
    """
    errors = targets ^ predictions
    error_rows = errors.sum(dim=2, dtype=torch.int32)  # [P, H]
    if target_row_counts is None:
        target_row_counts = targets.sum(dim=2, dtype=torch.int32)
    has_error = (error_rows.sum(dim=1) > 0)[:, None]
    rows = torch.arange(targets.shape[0], device=targets.device)
    xy, found = _sample_by_rows(torch.where(has_error, error_rows, target_row_counts),
                                lambda row: torch.where(has_error, errors[rows, row], targets[rows, row]), generator,
                                uniform)
    x, y = xy[:, 0].long(), xy[:, 1].long()
    on_target = targets[rows, y, x]
    labels = torch.where(on_target, LABEL_POSITIVE, LABEL_NEGATIVE)
    labels = torch.where(found, labels, LABEL_PAD)
    return xy[:, None], labels[:, None].long()
