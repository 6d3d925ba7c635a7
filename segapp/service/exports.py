"""What the demo hands back: instance-id PNGs, COCO RLE JSON and colour overlays.

The demo's layer over segapp.formats (the conversions `segapp segment` uses too), plus what
only the demo draws: clicks, boxes and outlines. Shared by the image tab, the video tab and
the API endpoints.

    masks: list of [H, W] bool, one per object; where they overlap, the smaller object is on
    top (the overlap rule of segapp.formats.id_maps).
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from segapp.formats import coco
from segapp.formats.boxes import mask_to_xywh as bbox_xywh  # noqa: F401 (the demo's names)
from segapp.formats.id_maps import encode_id_png as id_map_to_png
from segapp.formats.id_maps import instance_id_map
from segapp.formats.mp4 import write_mp4  # noqa: F401
from segapp.formats.overlay import OVERLAY_ALPHA, PALETTE, tint  # noqa: F401
from segapp.formats.overlay import palette_colour as color_for  # noqa: F401
from segapp.formats.rle import decode_rle, encode_rle  # noqa: F401

DESCRIPTION = "segapp demo export"

# Marker radius (pixels, at a 512-pixel long side; scaled with the image) for clicks.
POINT_RADIUS = 6
POSITIVE_COLOR = (0, 200, 0)
NEGATIVE_COLOR = (220, 0, 0)
BOX_COLOR = (255, 255, 0)


def mask_to_png(mask: np.ndarray) -> bytes:
    """PNG bytes of one binary mask: 255 inside, 0 outside."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(mask, dtype=bool).astype(np.uint8) * 255, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def coco_json_for_image(masks: Sequence[np.ndarray], hw: tuple[int, int], *, file_name: str = "image.png",
                        names: Sequence[str] | None = None, scores: Sequence[float] | None = None,
                        ids: Sequence[int] | None = None, labels: Sequence[str] | None = None,
                        segmentation: str = "rle") -> str:
    """COCO JSON text for the masks of one image. labels: each mask's class label (its
    category, segapp.formats.coco.categories_from_labels; "" is the "object" category);
    segmentation: "rle" (compressed RLE, exact) or "polygons" (segapp.formats.polygons)."""
    image = coco.image_record(1, hw, file_name)
    categories = coco.categories_from_labels(labels) if labels else None
    anns = coco.annotations(masks, image_id=1, names=names, scores=scores, ids=ids, labels=labels,
                            categories=categories, segmentation=segmentation)
    return json.dumps(coco.document([image], anns, DESCRIPTION, categories=categories, segmentation=segmentation))


def overlay(image: np.ndarray, masks: Sequence[np.ndarray], colors: Sequence[tuple[int, int, int]],
            *, alpha: float = OVERLAY_ALPHA, highlight: int | None = None,
            points: Sequence[Sequence[float]] = (), labels: Sequence[int] = (),
            box: Sequence[float] | None = None, pending_corner: Sequence[float] | None = None) -> np.ndarray:
    """[H, W, 3] uint8: the image with each mask tinted in its colour and outlined. Where masks
    overlap, the pixel takes the colour of the object the instance-id map gives it (the smaller).

    highlight: index of the selected mask, outlined thicker. points/labels: clicks to mark
    (green positive, red negative); box: xyxy to draw; pending_corner: a box's first corner.
    """
    import cv2

    masks = [np.asarray(m, dtype=bool) for m in masks]
    id_map = instance_id_map(masks, np.shape(image)[:2])
    out = tint(image, id_map, {k + 1: tuple(c) for k, c in enumerate(colors)}, alpha)
    scale = max(1.0, max(out.shape[:2]) / 512)
    for k, (mask, color) in enumerate(zip(masks, colors)):
        if not mask.any():
            continue
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        thickness = max(1, int(round(scale * (3 if k == highlight else 1))))
        cv2.drawContours(out, contours, -1, tuple(int(c) for c in color), thickness)
    radius = max(2, int(round(POINT_RADIUS * scale)))
    for (x, y), label in zip(points, labels):
        center = (int(round(x)), int(round(y)))
        cv2.circle(out, center, radius, POSITIVE_COLOR if label == 1 else NEGATIVE_COLOR, -1)
        cv2.circle(out, center, radius, (255, 255, 255), max(1, int(scale)))
    if box is not None:
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        cv2.rectangle(out, (x0, y0), (x1, y1), BOX_COLOR, max(1, int(round(2 * scale))))
    if pending_corner is not None:
        center = (int(round(pending_corner[0])), int(round(pending_corner[1])))
        cv2.drawMarker(out, center, BOX_COLOR, cv2.MARKER_CROSS, 3 * radius, max(1, int(round(2 * scale))))
    return out


def save_png(array: np.ndarray, path: str | Path) -> Path:
    """Write an [H, W, 3] uint8 RGB (or [H, W] gray) array as PNG."""
    path = Path(path)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path, format="PNG")
    return path


def write_png_zip(id_maps, path: str | Path, digits: int = 5) -> Path:
    """A zip of instance-id PNGs, one per frame: `frames/00000.png`, ... .

    id_maps: iterable of (frame_idx, [H, W] uint16 id map)."""
    import zipfile

    path = Path(path)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:  # PNG is compressed already
        for frame_idx, id_map in id_maps:
            zf.writestr(f"frames/{frame_idx:0{digits}d}.png", id_map_to_png(id_map))
    return path
