"""COCO records of masks: annotations (segmentation as compressed RLE or polygons, area, bbox),
categories from free-text class labels, and documents.

The mask fields are computed one way for every writer (the demo's downloads and
`segapp segment`'s results): `segmentation` from segapp.formats.rle.encode_rle, `area` the
pixel count, `bbox` COCO's [x, y, w, h] of the pixels (segapp.formats.boxes.mask_to_xywh).
With polygons (segapp.formats.polygons: holes filled, tiny fragments dropped) `area` and `bbox`
are those of the pixels the polygons cover, so the three fields agree with each other.

Categories: each distinct class label (stripped of surrounding spaces, compared exactly) is a
category, with ids 1, 2, ... in the order the labels are first seen; an object without a label
(None or blank) is in the category UNLABELLED ("object"), which is then numbered like any label.
Without labels every annotation is in OBJECT_CATEGORY (id 1), as before.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

from segapp.formats.boxes import mask_to_xywh
from segapp.formats.polygons import MIN_RING_AREA, mask_to_polygons, polygons_to_mask
from segapp.formats.rle import encode_rle

UNLABELLED = "object"
OBJECT_CATEGORY = {"id": 1, "name": UNLABELLED, "supercategory": "object"}
SEGMENTATIONS = ("rle", "polygons")
FORMAT_NOTE = {"rle": "COCO, segmentation as compressed RLE", "polygons": "COCO, segmentation as polygons"}


def mask_fields(mask: np.ndarray, *, segmentation: str = "rle",
                min_area: float = MIN_RING_AREA) -> dict[str, Any]:
    """{"segmentation", "area": int pixels, "bbox": [x, y, w, h] ints} of one [H, W] mask.

    segmentation: "rle" (compressed RLE, exact) or "polygons" (a list of rings
    [[x0, y0, x1, y1, ...], ...] in pixels, [] for an empty mask; min_area: the fragment rule
    of segapp.formats.polygons)."""
    mask = np.asarray(mask, dtype=bool)
    if segmentation == "rle":
        return {"segmentation": encode_rle(mask), "area": int(mask.sum()), "bbox": mask_to_xywh(mask)}
    if segmentation != "polygons":
        raise ValueError(f"segmentation must be one of {SEGMENTATIONS}, got {segmentation!r}")
    rings = mask_to_polygons(mask, min_area=min_area)
    drawn = polygons_to_mask(rings, mask.shape)
    return {"segmentation": [[round(v, 2) for v in ring] for ring in rings], "area": int(drawn.sum()),
            "bbox": mask_to_xywh(drawn)}


def label_name(label: str | None) -> str:
    """The category name of a class label: stripped; UNLABELLED for None or a blank label."""
    if label is not None and not isinstance(label, str):
        raise ValueError(f"a class label must be text or None, got {label!r}")
    name = (label or "").strip()
    return name or UNLABELLED


def categories_from_labels(labels: Iterable[str | None]) -> list[dict[str, Any]]:
    """COCO categories [{"id", "name", "supercategory": "object"}, ...] of the labels: one per
    distinct name (label_name), ids 1, 2, ... in first-seen order."""
    names: dict[str, int] = {}
    for label in labels:
        names.setdefault(label_name(label), len(names) + 1)
    return [{"id": cid, "name": name, "supercategory": "object"} for name, cid in names.items()]


def category_ids(labels: Sequence[str | None], categories: Sequence[dict]) -> list[int]:
    """The category id of each label in `categories` (by label_name); ValueError naming a label
    that has no category."""
    by_name = {c["name"]: int(c["id"]) for c in categories}
    ids = []
    for label in labels:
        name = label_name(label)
        if name not in by_name:
            raise ValueError(f"class label {name!r} is not among the categories {sorted(by_name)}")
        ids.append(by_name[name])
    return ids


def image_record(image_id: int, hw: tuple[int, int], file_name: str, **extra: Any) -> dict[str, Any]:
    """A COCO image entry: {"id", "width", "height", "file_name"} plus any extra fields (e.g. a
    video frame's "frame_index"). hw: (height, width) in pixels."""
    return {"id": int(image_id), "width": int(hw[1]), "height": int(hw[0]), "file_name": str(file_name), **extra}


def annotations(masks: Sequence[np.ndarray], *, image_id: int = 1, names: Sequence[str] | None = None,
                scores: Sequence[float] | None = None, ids: Sequence[int] | None = None,
                start_id: int = 1, labels: Sequence[str | None] | None = None,
                categories: Sequence[dict] | None = None, segmentation: str = "rle",
                min_area: float = MIN_RING_AREA) -> list[dict[str, Any]]:
    """One COCO annotation per mask: {"id": start_id + k, "image_id", "category_id", the mask
    fields (mask_fields with segmentation and min_area), "iscrowd": 0}, plus "object_id",
    "name" and "score" where given.

    labels: each mask's class label; its category_id is looked up in `categories` (the
    document's, so ids agree across images and video frames), or in
    categories_from_labels(labels) when None. Without labels every category_id is 1."""
    if labels is None:
        cat_ids = [OBJECT_CATEGORY["id"]] * len(masks)
    else:
        if len(labels) != len(masks):
            raise ValueError(f"{len(masks)} masks but {len(labels)} labels")
        cat_ids = category_ids(labels, categories_from_labels(labels) if categories is None else categories)
    anns = []
    for k, mask in enumerate(masks):
        ann = {"id": start_id + k, "image_id": image_id, "category_id": cat_ids[k],
               **mask_fields(mask, segmentation=segmentation, min_area=min_area), "iscrowd": 0}
        if ids is not None:
            ann["object_id"] = int(ids[k])
        if names is not None:
            ann["name"] = names[k]
        if scores is not None:
            ann["score"] = float(scores[k])
        anns.append(ann)
    return anns


def document(images: Sequence[dict], annotations: Sequence[dict], description: str, *,
             categories: Sequence[dict] | None = None, segmentation: str = "rle") -> dict[str, Any]:
    """A COCO document. images: [{"id", "width", "height", "file_name"}, ...]; categories:
    the list from categories_from_labels, or None for the one "object" category;
    segmentation: what the annotations hold ("rle" or "polygons"), said in `info.format`."""
    if segmentation not in SEGMENTATIONS:
        raise ValueError(f"segmentation must be one of {SEGMENTATIONS}, got {segmentation!r}")
    return {
        "info": {"description": description, "format": FORMAT_NOTE[segmentation]},
        "images": list(images),
        "annotations": list(annotations),
        "categories": [dict(c) for c in categories] if categories is not None else [dict(OBJECT_CATEGORY)],
    }
