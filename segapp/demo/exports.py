"""What the demo hands back: instance-id PNGs, COCO RLE JSON and colour overlays.

Pure functions over NumPy masks, shared by the image tab, the video tab and the API
endpoints, so that every download is made the same way and is unit-testable.

    masks: list of [H, W] bool, one per object; a later mask is drawn over an earlier one.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

# Distinct colours for objects (Tableau 10), RGB; object k gets PALETTE[k % len(PALETTE)].
PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)
# Opacity of the mask colour in overlays.
OVERLAY_ALPHA = 0.5
# Marker radius (pixels, at a 512-pixel long side; scaled with the image) for clicks.
POINT_RADIUS = 6
POSITIVE_COLOR = (0, 200, 0)
NEGATIVE_COLOR = (220, 0, 0)
BOX_COLOR = (255, 255, 0)


def color_for(index: int) -> tuple[int, int, int]:
    """The colour of the index-th object (0-based), cycling through PALETTE."""
    return PALETTE[index % len(PALETTE)]


def instance_id_map(masks: Sequence[np.ndarray], hw: tuple[int, int],
                    ids: Sequence[int] | None = None) -> np.ndarray:
    """[H, W] uint16 map: 0 background, ids[k] (default k + 1) where masks[k] is set.
    Later masks are painted over earlier ones."""
    out = np.zeros(hw, dtype=np.uint16)
    ids = list(range(1, len(masks) + 1)) if ids is None else list(ids)
    if len(ids) != len(masks):
        raise ValueError(f"{len(masks)} masks but {len(ids)} ids")
    for mask, obj_id in zip(masks, ids):
        if not 0 < obj_id <= 65535:
            raise ValueError(f"instance ids must be in 1..65535, got {obj_id}")
        out[np.asarray(mask, dtype=bool)] = obj_id
    return out


def id_map_to_png(id_map: np.ndarray) -> bytes:
    """PNG bytes of an instance-id map: 8-bit gray when every id fits, else 16-bit gray."""
    buf = io.BytesIO()
    if int(id_map.max(initial=0)) < 256:
        Image.fromarray(id_map.astype(np.uint8), mode="L").save(buf, format="PNG")
    else:
        Image.fromarray(id_map.astype(np.uint16)).save(buf, format="PNG")
    return buf.getvalue()


def mask_to_png(mask: np.ndarray) -> bytes:
    """PNG bytes of one binary mask: 255 inside, 0 outside."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(mask, dtype=bool).astype(np.uint8) * 255, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def encode_rle(mask: np.ndarray) -> dict:
    """COCO compressed RLE of one [H, W] mask, JSON-ready: {"size": [H, W], "counts": str}."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: dict) -> np.ndarray:
    """[H, W] bool from a COCO RLE as written by `encode_rle`."""
    from pycocotools import mask as mask_utils

    counts = rle["counts"]
    return mask_utils.decode({"size": rle["size"],
                              "counts": counts.encode("ascii") if isinstance(counts, str) else counts}).astype(bool)


def bbox_xywh(mask: np.ndarray) -> list[int]:
    """[x, y, w, h] of the mask's pixels (COCO convention, w and h in pixels); zeros if empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return [0, 0, 0, 0]
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def coco_annotations(masks: Sequence[np.ndarray], *, image_id: int = 1, names: Sequence[str] | None = None,
                     scores: Sequence[float] | None = None, ids: Sequence[int] | None = None,
                     start_id: int = 1) -> list[dict]:
    """One COCO annotation per mask (segmentation as compressed RLE, area, bbox)."""
    anns = []
    for k, mask in enumerate(masks):
        mask = np.asarray(mask, dtype=bool)
        ann = {
            "id": start_id + k,
            "image_id": image_id,
            "category_id": 1,
            "segmentation": encode_rle(mask),
            "area": int(mask.sum()),
            "bbox": bbox_xywh(mask),
            "iscrowd": 0,
        }
        if ids is not None:
            ann["object_id"] = int(ids[k])
        if names is not None:
            ann["name"] = names[k]
        if scores is not None:
            ann["score"] = float(scores[k])
        anns.append(ann)
    return anns


def coco_document(images: Sequence[dict], annotations: Sequence[dict]) -> dict:
    """A COCO-format results document with one "object" category.

    images: [{"id", "width", "height", "file_name"}, ...]."""
    return {
        "info": {"description": "segapp demo export", "format": "COCO, segmentation as compressed RLE"},
        "images": list(images),
        "annotations": list(annotations),
        "categories": [{"id": 1, "name": "object", "supercategory": "object"}],
    }


def coco_json_for_image(masks: Sequence[np.ndarray], hw: tuple[int, int], *, file_name: str = "image.png",
                        names: Sequence[str] | None = None, scores: Sequence[float] | None = None,
                        ids: Sequence[int] | None = None) -> str:
    """COCO RLE JSON text for the masks of one image."""
    image = {"id": 1, "width": int(hw[1]), "height": int(hw[0]), "file_name": file_name}
    anns = coco_annotations(masks, image_id=1, names=names, scores=scores, ids=ids)
    return json.dumps(coco_document([image], anns))


def overlay(image: np.ndarray, masks: Sequence[np.ndarray], colors: Sequence[tuple[int, int, int]],
            *, alpha: float = OVERLAY_ALPHA, highlight: int | None = None,
            points: Sequence[Sequence[float]] = (), labels: Sequence[int] = (),
            box: Sequence[float] | None = None, pending_corner: Sequence[float] | None = None) -> np.ndarray:
    """[H, W, 3] uint8: the image with each mask tinted in its colour and outlined.

    highlight: index of the selected mask, outlined thicker. points/labels: clicks to mark
    (green positive, red negative); box: xyxy to draw; pending_corner: a box's first corner.
    """
    import cv2

    out = np.asarray(image, dtype=np.uint8).copy()
    if out.ndim == 2:
        out = np.repeat(out[..., None], 3, axis=2)
    scale = max(1.0, max(out.shape[:2]) / 512)
    for k, (mask, color) in enumerate(zip(masks, colors)):
        mask = np.asarray(mask, dtype=bool)
        if not mask.any():
            continue
        tint = np.asarray(color, dtype=np.float32)
        out[mask] = ((1 - alpha) * out[mask] + alpha * tint).astype(np.uint8)
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


def write_mp4(frames, path: str | Path, fps: float) -> Path:
    """Write [H, W, 3] uint8 RGB frames as H.264 MP4 (yuv420p, plays in browsers) with PyAV.
    Odd sizes are padded by one pixel (yuv420p needs even sides)."""
    import av
    from fractions import Fraction

    path = Path(path)
    rate = Fraction(fps).limit_denominator(1001) if fps and fps > 0 else Fraction(25)
    container = av.open(str(path), mode="w")
    try:
        stream = None
        for frame in frames:
            frame = np.asarray(frame, dtype=np.uint8)
            h, w = frame.shape[:2]
            if h % 2 or w % 2:
                frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
            if stream is None:
                stream = container.add_stream("libx264", rate=rate)
                stream.width, stream.height = frame.shape[1], frame.shape[0]
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": "23", "preset": "veryfast"}
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        if stream is None:
            raise ValueError("no frames to write")
        for packet in stream.encode():
            container.mux(packet)
    finally:
        container.close()
    return path
