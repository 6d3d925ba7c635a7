"""Real masks for the format tests: COCO val2017 objects of shared/data/coco_tiny, read with pycocotools."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def coco_val_images(shared_data: Path, max_images: int) -> list[tuple[tuple[int, int], list[np.ndarray], list[str]]]:
    """[((H, W), masks [H, W] bool, category names), ...]: the non-crowd objects of the first
    max_images images (by id) that have any."""
    from pycocotools.coco import COCO

    api = COCO(str(shared_data / "coco_tiny" / "annotations" / "instances_val2017.json"))
    out = []
    for image_id in sorted(api.getImgIds()):
        anns = api.loadAnns(api.getAnnIds(imgIds=[image_id], iscrowd=False))
        if not anns:
            continue
        info = api.loadImgs(image_id)[0]
        names = [api.loadCats(a["category_id"])[0]["name"] for a in anns]
        out.append(((info["height"], info["width"]), [api.annToMask(a).astype(bool) for a in anns], names))
        if len(out) == max_images:
            break
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else 1.0


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """The mask with its holes filled: background not 4-connected to the outside becomes set
    (the dual of 8-connected objects, as polygons.mask_to_polygons traces them)."""
    import cv2

    padded = np.ascontiguousarray(np.pad(np.asarray(mask, dtype=np.uint8), 1))
    cv2.floodFill(padded, None, (0, 0), 2)
    return (padded != 2)[1:-1, 1:-1]
