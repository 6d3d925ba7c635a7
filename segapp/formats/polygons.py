"""Binary masks as polygons (COCO `segmentation` polygons, YOLO-seg), and polygons back to masks.

Coordinates are image pixels on pixel *edges*, as COCO's: pixel (x, y) is the unit square
[x, x + 1] x [y, y + 1], so a mask of the single pixel (3, 5) is the ring
(3, 5) (4, 5) (4, 6) (3, 6) and a full W x H mask spans [0, W] x [0, H].

How a ring is traced. OpenCV's contours run through pixel *centres*, which loses half a pixel
all round (COCO val masks come back through pycocotools at IoU 0.89 on average). Instead the
mask is doubled (each pixel becomes 2 x 2) and we trace the grid of the doubled mask's pixel
corners, a corner being set when any of its four pixels is: that traces the pixel edges, and
where the outline steps diagonally it cuts only 1/8-pixel triangles that hold no pixel centre,
so pycocotools decodes the rings to exactly the mask's pixels (holes aside, below).

Rules (one for every writer):
- Holes are filled: each 8-connected piece of the mask gives its outer boundary only. COCO
  polygons are drawn as a union (`pycocotools.mask.merge`), so a hole ring would be painted
  in, not cut out; a mask whose holes matter is exported as RLE (COCO's default here). On the
  COCO val masks of shared/data the filled holes cost IoU 0.99994 on average (worst 0.987).
- Tiny fragments are dropped: a ring enclosing less than `min_area` pixels (its polygon area,
  holes counted as filled) is left out, except that the largest ring is always kept, so a
  non-empty mask never has an empty polygon list. Default MIN_RING_AREA.
- `tolerance` > 0 simplifies each ring (Douglas-Peucker, at most that many pixels off the
  traced outline) for fewer points; the default 0 keeps the exact outline.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from segapp.formats.boxes import mask_to_box

# Rings enclosing fewer pixels than this are dropped (sprinkles), the largest ring excepted.
MIN_RING_AREA = 9.0
# The mask is traced at twice its resolution (see the module docstring).
TRACE_SCALE = 2
# A polygon ring needs three points (six numbers); pycocotools reads four numbers as a box.
MIN_RING_POINTS = 3

Ring = list[float]  # [x0, y0, x1, y1, ...] pixel coordinates of one closed ring


def mask_to_polygons(mask: np.ndarray, *, min_area: float = MIN_RING_AREA,
                     tolerance: float = 0.0) -> list[Ring]:
    """[H, W] bool -> rings [[x0, y0, x1, y1, ...], ...], the outer boundary of each piece,
    largest first; [] for an empty mask. See the module for holes, min_area and tolerance."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be [H, W], got shape {mask.shape}")
    if min_area < 0 or tolerance < 0:
        raise ValueError(f"min_area and tolerance must be >= 0, got {min_area} and {tolerance}")
    if not mask.any():
        return []
    x0, y0, x1, y1 = mask_to_box(mask)
    crop = mask[y0:y1 + 1, x0:x1 + 1]  # trace only the mask's box: cheap for small objects
    doubled = np.repeat(np.repeat(crop, TRACE_SCALE, axis=0), TRACE_SCALE, axis=1)
    padded = np.pad(doubled, 1)
    # corners[i, j]: the corner at doubled-pixel edge (j, i) touches a set pixel.
    corners = padded[:-1, :-1] | padded[1:, :-1] | padded[:-1, 1:] | padded[1:, 1:]
    contours, _ = cv2.findContours(np.ascontiguousarray(corners, dtype=np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    scored = []
    for contour in contours:
        if tolerance > 0:
            simpler = cv2.approxPolyDP(contour, tolerance * TRACE_SCALE, True)
            contour = simpler if len(simpler) >= MIN_RING_POINTS else contour
        if len(contour) < MIN_RING_POINTS:
            continue
        scored.append((cv2.contourArea(contour) / TRACE_SCALE ** 2, contour))
    scored.sort(key=lambda item: -item[0])
    kept = [c for k, (area, c) in enumerate(scored) if k == 0 or area >= min_area]
    offset = np.array([x0, y0], dtype=np.float64)
    return [(c.reshape(-1, 2) / TRACE_SCALE + offset).ravel().tolist() for c in kept]


def polygons_to_mask(polygons: Sequence[Sequence[float]], hw: tuple[int, int]) -> np.ndarray:
    """Rings [[x0, y0, ...], ...] in pixel coordinates -> [H, W] bool, their union as
    pycocotools draws COCO polygons (a pixel is set when its centre is inside)."""
    from pycocotools import mask as mask_utils

    h, w = int(hw[0]), int(hw[1])
    rings = [list(map(float, ring)) for ring in polygons]
    bad = [k for k, ring in enumerate(rings) if len(ring) < 2 * MIN_RING_POINTS or len(ring) % 2]
    if bad:
        raise ValueError(f"polygon ring {bad[0]} has {len(rings[bad[0]])} numbers: a ring needs x, y "
                         f"pairs of at least {MIN_RING_POINTS} points")
    if not rings:
        return np.zeros((h, w), dtype=bool)
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(rings, h, w))).astype(bool)


def join_rings(rings: Sequence[Sequence[float]]) -> Ring:
    """Several rings -> one ring tracing each in turn (formats with one polygon per object, such
    as YOLO-seg). Each next ring is reached by a bridge from its nearest point to the nearest
    point of the ring before it, walked there and back; the bridges enclose no area, so
    `polygons_to_mask([join_rings(r)])` equals `polygons_to_mask(r)` up to pixels a bridge
    crosses exactly through their centres. [] for no rings."""
    loops = [np.asarray(ring, dtype=np.float64).reshape(-1, 2) for ring in rings]
    if len(loops) <= 1:
        return loops[0].ravel().tolist() if loops else []
    # entry[k], exit[k]: where the path enters ring k and leaves it for ring k + 1.
    entry, exit_ = [0] * len(loops), [0] * len(loops)
    for k in range(len(loops) - 1):
        d = ((loops[k][:, None, :] - loops[k + 1][None, :, :]) ** 2).sum(-1)
        exit_[k], entry[k + 1] = (int(i) for i in np.unravel_index(int(np.argmin(d)), d.shape))
    forward, backward = [], []
    for k, loop in enumerate(loops):
        turned = np.roll(loop, -entry[k], axis=0)  # starts at the entry point
        if k == len(loops) - 1:
            forward.append(np.concatenate([turned, turned[:1]]))  # the last ring: all the way round
            continue
        at = (exit_[k] - entry[k]) % len(loop)
        forward.append(turned[:at + 1])  # entry -> exit, then over the bridge
        backward.insert(0, np.concatenate([turned[at:], turned[:1]]))  # back: exit -> round to entry
    return np.concatenate(forward + backward).ravel().tolist()
