"""Building blocks of "segment everything": small pure functions plus one container.

Conventions: boxes are XYXY in pixels unless a name says XYWH; masks are [..., H, W]
bool; a crop box is [x0, y0, x1, y1] ints, x1/y1 exclusive (a slice of the image).
Boxes computed from masks are XYXY with *inclusive* right/bottom pixel indices, the
convention of the official generator (a one-pixel mask at (3, 5) has box [3, 5, 3, 5]).

RLE (uncompressed and COCO's compressed form), the box of one mask and small-region clean-up
are segapp.formats' (rle, boxes, components), re-exported here.
"""
from __future__ import annotations

import math
from itertools import product
from typing import Any, Iterator, Sequence

import numpy as np
import torch

# The mask conversions of segment everything live in segapp.formats; they are part of this
# module's public API too (as in SAM's amg utilities).
from segapp.formats.boxes import mask_to_box as mask_to_box_np  # noqa: F401
from segapp.formats.components import remove_small_regions  # noqa: F401
from segapp.formats.rle import (area_from_rle, coco_encode_rle, mask_to_rle, rle_to_mask,  # noqa: F401
                                encode_rle as mask_to_coco_rle)

# Boxes within this many pixels of a crop's inner edge are dropped: the object probably
# continues outside the crop, and a larger crop (or the full image) sees it whole.
CROP_EDGE_TOLERANCE = 20.0
# Low-res logits fed back as mask input are clamped to this range, as the predictor does.
MASK_INPUT_CLAMP = 32.0
OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")


# ---------------------------------------------------------------------------- point grids
def build_point_grid(n_per_side: int) -> np.ndarray:
    """[n*n, 2] float64 xy in (0, 1): cell centres of an n x n grid, x varying fastest."""
    if n_per_side < 1:
        raise ValueError(f"a point grid needs at least one point per side, got {n_per_side}")
    half_cell = 1.0 / (2 * n_per_side)
    centres = np.linspace(half_cell, 1.0 - half_cell, n_per_side)
    ys, xs = np.meshgrid(centres, centres, indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=-1)


def build_all_layer_point_grids(n_per_side: int, n_layers: int, scale_per_layer: int) -> list[np.ndarray]:
    """One grid per crop layer 0..n_layers; layer i has int(n_per_side / scale_per_layer**i) points a side."""
    return [build_point_grid(int(n_per_side / scale_per_layer ** i)) for i in range(n_layers + 1)]


# ---------------------------------------------------------------------------- crops
def generate_crop_boxes(im_size: Sequence[int], n_layers: int,
                        overlap_ratio: float) -> tuple[list[list[int]], list[int]]:
    """Crop boxes for an image of im_size (H, W): the full image (layer 0), then for layer
    i >= 1 a 2**i x 2**i tiling whose neighbours overlap by about overlap_ratio * short side * 2 / 2**i.

    Returns (boxes as [x0, y0, x1, y1] ints, layer index of each box); within a layer the
    boxes go column by column (x outer, y inner).
    """
    im_h, im_w = int(im_size[0]), int(im_size[1])
    short_side = min(im_h, im_w)
    boxes, layers = [[0, 0, im_w, im_h]], [0]
    for layer in range(1, n_layers + 1):
        n = 2 ** layer
        overlap = int(overlap_ratio * short_side * (2 / n))
        # n crops of length L overlapping by `overlap` cover n*L - (n-1)*overlap pixels.
        crop_w = int(math.ceil((overlap * (n - 1) + im_w) / n))
        crop_h = int(math.ceil((overlap * (n - 1) + im_h) / n))
        xs = [int((crop_w - overlap) * i) for i in range(n)]
        ys = [int((crop_h - overlap) * i) for i in range(n)]
        for x0, y0 in product(xs, ys):
            boxes.append([x0, y0, min(x0 + crop_w, im_w), min(y0 + crop_h, im_h)])
            layers.append(layer)
    return boxes, layers


def uncrop_boxes_xyxy(boxes: torch.Tensor, crop_box: Sequence[int]) -> torch.Tensor:
    """[..., 4] boxes in a crop's frame -> the image's frame."""
    x0, y0 = crop_box[0], crop_box[1]
    return boxes + torch.tensor([x0, y0, x0, y0], device=boxes.device)


def uncrop_points(points: torch.Tensor, crop_box: Sequence[int]) -> torch.Tensor:
    """[..., 2] xy points in a crop's frame -> the image's frame."""
    return points + torch.tensor([crop_box[0], crop_box[1]], device=points.device)


def uncrop_masks(masks: torch.Tensor, crop_box: Sequence[int], orig_h: int, orig_w: int) -> torch.Tensor:
    """[..., h, w] masks of a crop -> [..., orig_h, orig_w], zero outside the crop."""
    x0, y0, x1, y1 = crop_box
    if (x0, y0, x1, y1) == (0, 0, orig_w, orig_h):
        return masks
    pad = (x0, orig_w - x1, y0, orig_h - y1)  # left, right, top, bottom
    return torch.nn.functional.pad(masks, pad, value=0)


def is_box_near_crop_edge(boxes: torch.Tensor, crop_box: Sequence[int], orig_box: Sequence[int],
                          atol: float = CROP_EDGE_TOLERANCE) -> torch.Tensor:
    """boxes: [N, 4] XYXY in the crop's frame -> [N] bool: some side lies within atol of
    the crop's border where that border is not also the image's border."""
    crop = torch.as_tensor(crop_box, dtype=torch.float, device=boxes.device)
    orig = torch.as_tensor(orig_box, dtype=torch.float, device=boxes.device)
    boxes = uncrop_boxes_xyxy(boxes, crop_box).float()
    near_crop = torch.isclose(boxes, crop[None], atol=atol, rtol=0)
    near_image = torch.isclose(boxes, orig[None], atol=atol, rtol=0)
    return (near_crop & ~near_image).any(dim=1)


# ---------------------------------------------------------------------------- boxes
def box_xyxy_to_xywh(boxes):
    """[..., 4] XYXY -> XYWH (tensor or array; a new object, the input is not modified)."""
    out = boxes.clone() if isinstance(boxes, torch.Tensor) else np.array(boxes, copy=True)
    out[..., 2] = boxes[..., 2] - boxes[..., 0]
    out[..., 3] = boxes[..., 3] - boxes[..., 1]
    return out


def batched_mask_to_box(masks: torch.Tensor) -> torch.Tensor:
    """masks: [..., H, W] bool -> [..., 4] int64 XYXY (right/bottom inclusive); [0, 0, 0, 0]
    for an empty mask."""
    h, w = masks.shape[-2:]
    if masks.numel() == 0:
        return torch.zeros(*masks.shape[:-2], 4, dtype=torch.int64, device=masks.device)
    rows, cols = masks.any(dim=-1), masks.any(dim=-2)  # [..., H], [..., W]
    ys = torch.arange(h, device=masks.device)
    xs = torch.arange(w, device=masks.device)
    top = torch.where(rows, ys, h).amin(dim=-1)
    bottom = torch.where(rows, ys, -1).amax(dim=-1)
    left = torch.where(cols, xs, w).amin(dim=-1)
    right = torch.where(cols, xs, -1).amax(dim=-1)
    boxes = torch.stack([left, top, right, bottom], dim=-1)
    return torch.where(rows.any(dim=-1, keepdim=True), boxes, torch.zeros_like(boxes))


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """[N, 4] XYXY -> [N] (x1 - x0) * (y1 - y0)."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[N, 4], [M, 4] XYXY -> [N, M] intersection over union."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (box_area(a)[:, None] + box_area(b)[None, :] - inter)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression, torchvision's semantics without torchvision.

    boxes: [N, 4] XYXY; scores: [N]. Visits boxes by descending score (a stable sort, so
    equal scores keep their input order), keeps a box unless a kept one overlaps it with
    IoU > iou_threshold. Returns [K] int64 indices of the kept boxes, by descending score.
    """
    return batched_nms(boxes, scores, torch.zeros(len(boxes), dtype=torch.int64), iou_threshold)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor,
                iou_threshold: float) -> torch.Tensor:
    """`nms` within each category: boxes [N, 4], scores [N], idxs [N] int category; boxes of
    different categories never suppress each other. Returns [K] int64 indices by descending score."""
    n = len(boxes)
    if n == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    order = torch.argsort(scores, descending=True, stable=True)
    # float32 throughout, as torchvision's kernel, so ties at the threshold resolve the same way.
    b = boxes[order].detach().float().cpu().numpy()
    cat = idxs[order].detach().cpu().numpy()
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    suppressed = np.zeros(n, dtype=bool)
    keep = []
    # Only kept boxes compute overlaps (against the boxes after them), so memory stays O(N).
    for i in range(n):
        if suppressed[i]:
            continue
        keep.append(i)
        rest = slice(i + 1, n)
        w = np.clip(np.minimum(b[i, 2], b[rest, 2]) - np.maximum(b[i, 0], b[rest, 0]), 0, None)
        h = np.clip(np.minimum(b[i, 3], b[rest, 3]) - np.maximum(b[i, 1], b[rest, 1]), 0, None)
        inter = w * h
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = inter / (area[i] + area[rest] - inter)
        suppressed[rest] |= (iou > iou_threshold) & (cat[rest] == cat[i])
    return order[torch.as_tensor(keep, dtype=torch.int64, device=order.device)]


# ---------------------------------------------------------------------------- mask scores
def count_above(logits: torch.Tensor, threshold: float, use_numpy: bool | None = None) -> torch.Tensor:
    """logits: [..., H, W] -> [...] int64 number of pixels with value > threshold.

    use_numpy: count each plane with NumPy's count_nonzero (CPU tensors only), several times
    faster than torch's reductions over bool on CPU, which matters as this runs once or twice
    per candidate mask; False: torch's sum; None (default): NumPy on CPU. Exact counts either way.
    """
    lead = logits.shape[:-2]
    if use_numpy is None:
        use_numpy = logits.device.type == "cpu"
    elif use_numpy and logits.device.type != "cpu":
        raise ValueError(f"use_numpy=True needs a CPU tensor, got one on {logits.device}")
    if not use_numpy:
        return (logits > threshold).flatten(-2).sum(-1)
    planes = logits.detach().reshape(-1, logits.shape[-2] * logits.shape[-1]).numpy()
    counts = np.fromiter((np.count_nonzero(p > threshold) for p in planes), dtype=np.int64, count=len(planes))
    return torch.from_numpy(counts).reshape(lead)


def calculate_stability_score(logits: torch.Tensor, mask_threshold: float,
                              threshold_offset: float) -> torch.Tensor:
    """logits: [..., H, W] -> [...] float32 stability score: the IoU of the masks cut at
    mask_threshold + offset and mask_threshold - offset. The first lies inside the second,
    so the IoU is a ratio of pixel counts. NaN when both are empty."""
    inner = count_above(logits, mask_threshold + threshold_offset)
    outer = count_above(logits, mask_threshold - threshold_offset)
    return inner.float() / outer.float()


# ---------------------------------------------------------------------------- batching
def batch_iterator(batch_size: int, *args) -> Iterator[list]:
    """Yield [a[i:i+batch_size] for a in args] over equal-length sequences."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not args or any(len(a) != len(args[0]) for a in args):
        raise ValueError("batch_iterator needs sequences of one common length")
    for start in range(0, len(args[0]), batch_size):
        yield [a[start: start + batch_size] for a in args]


class MaskData:
    """Columns of per-mask values (tensors, arrays or lists, all of one length) that are
    filtered and concatenated together, so a mask never loses its box, score or point."""

    def __init__(self, **columns) -> None:
        self._columns: dict[str, Any] = {}
        for key, value in columns.items():
            self[key] = value

    def __len__(self) -> int:
        return len(next(iter(self._columns.values()))) if self._columns else 0

    def __contains__(self, key: str) -> bool:
        return key in self._columns

    def __getitem__(self, key: str):
        return self._columns[key]

    def __setitem__(self, key: str, value) -> None:
        if not isinstance(value, (torch.Tensor, np.ndarray, list)):
            raise TypeError(f"MaskData column {key!r} must be a tensor, array or list, not {type(value).__name__}")
        others = [k for k in self._columns if k != key]
        if others and len(value) != len(self._columns[others[0]]):
            raise ValueError(f"MaskData column {key!r} has {len(value)} rows, the others {len(self)}")
        self._columns[key] = value

    def __delitem__(self, key: str) -> None:
        del self._columns[key]

    def keys(self):
        return self._columns.keys()

    def items(self):
        return self._columns.items()

    def filter(self, keep: torch.Tensor) -> None:
        """Keep rows by a [N] bool mask or by [K] int64 indices (which may reorder)."""
        keep = torch.as_tensor(keep)
        index = keep.nonzero().flatten() if keep.dtype == torch.bool else keep.long()
        index_np = index.cpu().numpy()
        for key, value in self._columns.items():
            if isinstance(value, torch.Tensor):
                self._columns[key] = value[index.to(value.device)]
            elif isinstance(value, np.ndarray):
                self._columns[key] = value[index_np]
            else:
                self._columns[key] = [value[i] for i in index_np]

    def cat(self, other: "MaskData") -> None:
        """Append other's rows; both must have the same columns (or self none yet)."""
        if not self._columns:
            self._columns = dict(other._columns)
            return
        if set(other.keys()) != set(self.keys()):
            raise ValueError(f"MaskData columns differ: {sorted(self.keys())} vs {sorted(other.keys())}")
        for key, value in other.items():
            mine = self._columns[key]
            if isinstance(mine, torch.Tensor):
                self._columns[key] = torch.cat([mine, value])
            elif isinstance(mine, np.ndarray):
                self._columns[key] = np.concatenate([mine, value])
            else:
                self._columns[key] = mine + list(value)

    def to_numpy(self) -> None:
        """Tensors -> float32 arrays (the form records are read from)."""
        for key, value in self._columns.items():
            if isinstance(value, torch.Tensor):
                self._columns[key] = value.detach().float().cpu().numpy()
