"""COCO run-length encoding of binary masks.

Two forms, both COCO's: runs over the mask in column-major (Fortran) order, alternating
background and foreground and starting with background (a mask whose first pixel is set
starts with a 0 run).

    uncompressed: {"size": [H, W], "counts": [int, ...]}   (SAM's "uncompressed_rle" output)
    compressed:   {"size": [H, W], "counts": str}          (pycocotools' string, JSON-ready)

pycocotools is imported only by the functions that need it.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def mask_to_rle(masks) -> list[dict[str, Any]]:
    """masks: [N, H, W] bool (tensor or array) -> N uncompressed RLEs {"size": [H, W], "counts": [...]}."""
    if hasattr(masks, "detach"):  # a torch tensor: no torch import needed here
        masks = masks.detach().cpu().numpy()
    return [_uncompressed(m) for m in np.asarray(masks)]


def _uncompressed(mask: np.ndarray) -> dict[str, Any]:
    h, w = mask.shape
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return {"size": [h, w], "counts": []}
    starts = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate(([0], starts, [flat.size]))).tolist()
    if flat[0]:
        counts.insert(0, 0)
    return {"size": [h, w], "counts": counts}


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """Uncompressed RLE -> [H, W] bool (C-contiguous)."""
    h, w = rle["size"]
    counts = np.asarray(rle["counts"], dtype=np.int64)
    if counts.sum() != h * w:
        raise ValueError(f"RLE counts sum to {int(counts.sum())}, not H*W = {h * w}")
    values = (np.arange(len(counts)) % 2).astype(bool)  # runs alternate background, foreground
    return np.ascontiguousarray(np.repeat(values, counts).reshape(w, h).T)


def area_from_rle(rle: dict[str, Any]) -> int:
    """Foreground pixels of an uncompressed RLE (the odd runs)."""
    return int(sum(rle["counts"][1::2]))


def coco_encode_rle(uncompressed_rle: dict[str, Any]) -> dict[str, Any]:
    """Uncompressed RLE -> compressed RLE with `counts` as str (JSON-serialisable)."""
    from pycocotools import mask as mask_utils

    h, w = uncompressed_rle["size"]
    return _json_ready(mask_utils.frPyObjects(uncompressed_rle, h, w))


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """[H, W] mask (bool, or nonzero = foreground) -> compressed RLE with str counts; the same
    as coco_encode_rle(mask_to_rle(mask[None])[0])."""
    from pycocotools import mask as mask_utils

    return _json_ready(mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=bool), dtype=np.uint8)))


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """[H, W] bool from an RLE in either form (compressed counts as str or bytes, or a list of ints)."""
    counts = rle["counts"]
    if isinstance(counts, (list, tuple)):
        return rle_to_mask(rle)
    from pycocotools import mask as mask_utils

    coded = counts.encode("ascii") if isinstance(counts, str) else counts
    return mask_utils.decode({"size": list(rle["size"]), "counts": coded}).astype(bool)


def rle_area_and_box(rle: dict[str, Any]) -> tuple[int, list[float]]:
    """(pixel count, [x, y, w, h] box as floats) of a compressed RLE, as pycocotools computes them."""
    from pycocotools import mask as mask_utils

    coded = {"size": list(rle["size"]), "counts": rle["counts"].encode("ascii")}
    return int(mask_utils.area(coded)), [float(v) for v in mask_utils.toBbox(coded)]


def _json_ready(rle: dict[str, Any]) -> dict[str, Any]:
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}
