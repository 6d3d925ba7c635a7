"""COCO records of masks: annotations (segmentation as compressed RLE, area, bbox) and documents.

The mask fields are computed one way for every writer (the demo's downloads and
`segapp segment`'s results): `segmentation` from segapp.formats.rle.encode_rle, `area` the
pixel count, `bbox` COCO's [x, y, w, h] of the pixels (segapp.formats.boxes.mask_to_xywh).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from segapp.formats.boxes import mask_to_xywh
from segapp.formats.rle import encode_rle

OBJECT_CATEGORY = {"id": 1, "name": "object", "supercategory": "object"}


def mask_fields(mask: np.ndarray) -> dict[str, Any]:
    """{"segmentation": compressed RLE, "area": int pixels, "bbox": [x, y, w, h] ints} of one [H, W] mask."""
    mask = np.asarray(mask, dtype=bool)
    return {"segmentation": encode_rle(mask), "area": int(mask.sum()), "bbox": mask_to_xywh(mask)}


def image_record(image_id: int, hw: tuple[int, int], file_name: str, **extra: Any) -> dict[str, Any]:
    """A COCO image entry: {"id", "width", "height", "file_name"} plus any extra fields (e.g. a
    video frame's "frame_index"). hw: (height, width) in pixels."""
    return {"id": int(image_id), "width": int(hw[1]), "height": int(hw[0]), "file_name": str(file_name), **extra}


def annotations(masks: Sequence[np.ndarray], *, image_id: int = 1, names: Sequence[str] | None = None,
                scores: Sequence[float] | None = None, ids: Sequence[int] | None = None,
                start_id: int = 1) -> list[dict[str, Any]]:
    """One COCO annotation per mask: {"id": start_id + k, "image_id", "category_id": 1, the
    mask fields, "iscrowd": 0}, plus "object_id", "name" and "score" where given."""
    anns = []
    for k, mask in enumerate(masks):
        ann = {"id": start_id + k, "image_id": image_id, "category_id": OBJECT_CATEGORY["id"],
               **mask_fields(mask), "iscrowd": 0}
        if ids is not None:
            ann["object_id"] = int(ids[k])
        if names is not None:
            ann["name"] = names[k]
        if scores is not None:
            ann["score"] = float(scores[k])
        anns.append(ann)
    return anns


def document(images: Sequence[dict], annotations: Sequence[dict], description: str) -> dict[str, Any]:
    """A COCO document with one "object" category. images: [{"id", "width", "height", "file_name"}, ...]."""
    return {
        "info": {"description": description, "format": "COCO, segmentation as compressed RLE"},
        "images": list(images),
        "annotations": list(annotations),
        "categories": [dict(OBJECT_CATEGORY)],
    }
