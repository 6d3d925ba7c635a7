"""Mask -> polygons -> mask through pycocotools, on the COCO val objects of shared/data/coco_tiny.

    python benchmarks/bench_polygons.py [--annotations PATH]

For every non-crowd object: segapp.formats.polygons.mask_to_polygons (default fragment rule,
and min_area=0), drawn back with pycocotools (polygons_to_mask), compared by IoU with the
object's mask and with the mask with its holes filled; for comparison, OpenCV's usual
contours through pixel centres. Also the points written and the time per object.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from segapp.formats.polygons import mask_to_polygons, polygons_to_mask

DEFAULT = Path(__file__).resolve().parents[1].parent / "shared/data/coco_tiny/annotations/instances_val2017.json"


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else 1.0


def filled(mask: np.ndarray) -> np.ndarray:
    padded = np.ascontiguousarray(np.pad(mask.astype(np.uint8), 1))
    cv2.floodFill(padded, None, (0, 0), 2)
    return (padded != 2)[1:-1, 1:-1]


def centre_contours(mask: np.ndarray) -> list[list[float]]:
    contours, _ = cv2.findContours(np.ascontiguousarray(mask, dtype=np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_NONE)
    return [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]


def main() -> None:
    from pycocotools.coco import COCO

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotations", type=Path, default=DEFAULT)
    args = parser.parse_args()
    api = COCO(str(args.annotations))
    rows: dict[str, list[float]] = {}
    points, seconds, objects = 0, 0.0, 0
    for ann in api.loadAnns(api.getAnnIds(iscrowd=False)):
        info = api.loadImgs(ann["image_id"])[0]
        hw = (info["height"], info["width"])
        mask = api.annToMask(ann).astype(bool)
        start = time.perf_counter()
        rings = mask_to_polygons(mask)
        seconds += time.perf_counter() - start
        points += sum(len(r) for r in rings) // 2
        objects += 1
        drawn = polygons_to_mask(rings, hw)
        every = polygons_to_mask(mask_to_polygons(mask, min_area=0), hw)
        for name, value in [("segapp, default min_area: vs mask", iou(drawn, mask)),
                            ("segapp, min_area=0: vs mask", iou(every, mask)),
                            ("segapp, min_area=0: vs hole-filled mask", iou(every, filled(mask))),
                            ("OpenCV centre contours: vs mask", iou(polygons_to_mask(centre_contours(mask), hw), mask))]:
            rows.setdefault(name, []).append(value)
    print(f"{objects} objects, {points / objects:.0f} points and {1000 * seconds / objects:.2f} ms an object (segapp)")
    print("| polygons | mean IoU | worst IoU | objects under 0.99 |\n|---|---|---|---|")
    for name, values in rows.items():
        v = np.array(values)
        print(f"| {name} | {v.mean():.5f} | {v.min():.3f} | {(v < 0.99).sum()} |")


if __name__ == "__main__":
    main()
