"""COCO instances for promptable-segmentation evaluation: loading, selection, mask decoding.

An *instance* is an annotation whose mask, decoded with pycocotools, has at least one pixel;
crowd regions (``iscrowd == 1``) only when asked for. Everything that is left out is kept as a
`Skipped` record with a reason, so a report can say exactly what was not evaluated and why.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from pycocotools import mask as mask_utils

from segapp.formats import images as image_files

logger = logging.getLogger(__name__)

# COCO's area ranges (those of pycocotools' COCOeval), on the annotation's `area` field.
SMALL_AREA_MAX = 32**2
MEDIUM_AREA_MAX = 96**2
AREA_RANGES = ("small", "medium", "large")

# Why an annotation was not evaluated. The first group is the protocol's own selection; the
# second is bad input (a broken dataset), which makes the CLI exit with 1.
SKIP_CROWD = "crowd"
SKIP_EMPTY_MASK = "empty_mask"
SKIP_BELOW_MIN_AREA = "below_min_area"
SKIP_UNKNOWN_IMAGE = "unknown_image_id"
SKIP_MISSING_IMAGE = "missing_image_file"
SKIP_UNREADABLE_IMAGE = "unreadable_image"
SKIP_IMAGE_SIZE = "image_size_mismatch"
SKIP_MALFORMED = "malformed_annotation"
SKIP_INVALID_BBOX = "invalid_bbox"
SKIP_INVALID_POLYGON = "invalid_polygon"
PROTOCOL_SKIPS = (SKIP_CROWD, SKIP_EMPTY_MASK, SKIP_BELOW_MIN_AREA)
BAD_INPUT_SKIPS = (SKIP_UNKNOWN_IMAGE, SKIP_MISSING_IMAGE, SKIP_UNREADABLE_IMAGE, SKIP_IMAGE_SIZE,
                   SKIP_MALFORMED, SKIP_INVALID_BBOX, SKIP_INVALID_POLYGON)

# A bbox may overhang the image by this many pixels (rounding in converted datasets); beyond
# that it is skipped as invalid_bbox.
BBOX_TOLERANCE_PX = 1.0
# Polygon vertices may lie at most this many image sides (the longer one) outside the image.
# pycocotools rasterises polygons with C ints and allocates memory along the outline, so
# unbounded coordinates (1e12) crash the process; the bound keeps its work proportional to
# the image.
POLYGON_MARGIN_SIDES = 1.0


class AnnotationFileError(ValueError):
    """The annotation file cannot be used at all (unreadable, not JSON, not COCO instances)."""


@dataclass(frozen=True)
class Skipped:
    """One annotation that was not evaluated. `image_id`/`annotation_id` may be None when unknown."""

    image_id: int | None
    annotation_id: int | None
    reason: str
    detail: str


@dataclass(frozen=True)
class Instance:
    """One annotation to evaluate (its mask is decoded per image, when the image is evaluated)."""

    annotation_id: int
    image_id: int
    category_id: int
    category: str
    area: float  # the annotation's `area` field: decides small / medium / large, as in COCOeval
    bbox_xyxy: tuple[float, float, float, float]  # `bbox` (XYWH) as x0, y0, x1, y1 pixels
    iscrowd: bool
    segmentation: object  # polygons, uncompressed or compressed RLE, as in the file


@dataclass(frozen=True)
class ImageEntry:
    image_id: int
    file_name: str
    height: int
    width: int
    path: Path
    instances: tuple[Instance, ...]


@dataclass
class CocoInstances:
    """The selected images (ordered by image id) with their instances, plus what was skipped."""

    annotations_path: Path
    images_dir: Path
    images: list[ImageEntry]
    categories: dict[int, str]
    skipped: list[Skipped] = field(default_factory=list)


def area_range(area: float) -> str:
    """COCO's area range of an annotation area: 'small' (< 32²), 'medium' (< 96²) or 'large'."""
    if area < SMALL_AREA_MAX:
        return "small"
    return "medium" if area < MEDIUM_AREA_MAX else "large"


def decode_segmentation(segmentation, height: int, width: int) -> np.ndarray:
    """Decode a COCO `segmentation` to a [H, W] bool mask, exactly as pycocotools' `annToMask`.

    Polygons (a list of [x0, y0, x1, y1, ...] parts) are rasterised and merged; uncompressed RLE
    (`counts` a list, used for crowd regions) and compressed RLE (`counts` a string) are decoded.
    Raises InvalidPolygonError for polygons pycocotools must not see (`check_polygon`), checked
    before it is called, and ValueError for anything else.
    """
    if isinstance(segmentation, list):
        if not all(isinstance(p, list) and len(p) % 2 == 0 for p in segmentation):
            raise ValueError("polygons must be lists of x, y pairs")
        # Parts of fewer than 3 points enclose nothing. They are dropped rather than handed to
        # pycocotools, which would read a 4-number first part as a box.
        parts = [p for p in segmentation if len(p) >= 6]
        for part in parts:
            check_polygon(part, height, width)
        if not parts:
            return np.zeros((height, width), dtype=bool)
        rle = mask_utils.merge(_pycoco(mask_utils.frPyObjects, parts, height, width))
    elif isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        if list(segmentation["size"]) != [height, width]:
            raise ValueError(f"RLE size {segmentation['size']} differs from the image's "
                             f"[{height}, {width}]")
        if isinstance(segmentation["counts"], list):
            rle = _pycoco(mask_utils.frPyObjects, segmentation, height, width)
        else:
            rle = segmentation
    else:
        raise ValueError("segmentation is neither polygons nor RLE")
    return _pycoco(mask_utils.decode, rle).astype(bool)


class InvalidPolygonError(ValueError):
    """A polygon pycocotools must not be given: non-numeric, NaN/infinite or far off the image."""


def check_polygon(part, height: int, width: int) -> None:
    """Raise InvalidPolygonError unless `part` ([x0, y0, x1, y1, ...]) holds finite numbers
    within POLYGON_MARGIN_SIDES image sides of the image, so that pycocotools can rasterise it."""
    try:
        xy = np.asarray(part, dtype=np.float64).reshape(-1, 2)
    except (TypeError, ValueError) as err:
        raise InvalidPolygonError(f"polygon coordinates are not numbers ({err})") from err
    if not np.isfinite(xy).all():
        raise InvalidPolygonError("polygon has NaN or infinite coordinates")
    margin = POLYGON_MARGIN_SIDES * max(height, width)
    low, high = -margin, np.array([width + margin, height + margin])
    far = (xy < low).any(axis=1) | (xy > high).any(axis=1)
    if far.any():
        raise InvalidPolygonError(
            f"polygon vertex {xy[np.argmax(far)].tolist()} lies far outside the {width}x{height} "
            f"image (allowed: x in {low:g}..{high[0]:g}, y in {low:g}..{high[1]:g})")


def bbox_problem(bbox_xyxy: tuple[float, float, float, float], height: int, width: int) -> str | None:
    """Why an (x0, y0, x1, y1) bbox cannot be a box prompt on a `height` x `width` image, or
    None: NaN/infinite values, a negative width or height, or lying outside the image by more
    than BBOX_TOLERANCE_PX. Messages quote the bbox as the file has it, [x, y, w, h]."""
    x0, y0, x1, y1 = bbox_xyxy
    xywh = f"bbox [{x0:g}, {y0:g}, {x1 - x0:g}, {y1 - y0:g}]"
    if not np.isfinite(bbox_xyxy).all():
        return f"{xywh} has NaN or infinite values"
    if x1 < x0 or y1 < y0:
        return f"{xywh} has a negative width or height"
    tol = BBOX_TOLERANCE_PX
    if x0 < -tol or y0 < -tol or x1 > width + tol or y1 > height + tol:
        return f"{xywh} lies outside the {width}x{height} image"
    return None


def _pycoco(fn, *args):
    """Call pycocotools, turning its bare `Exception`s into ValueError."""
    try:
        return fn(*args)
    except Exception as err:  # pycocotools raises plain Exception for unsupported input
        raise ValueError(f"pycocotools cannot read it: {err}") from err


def bbox_xywh_to_xyxy(bbox) -> tuple[float, float, float, float]:
    x, y, w, h = (float(v) for v in bbox)
    return (x, y, x + w, y + h)


def _load_json(path: Path) -> dict:
    if not path.is_file():
        raise AnnotationFileError(f"annotation file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise AnnotationFileError(
            f"{path} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from err
    except UnicodeDecodeError as err:
        raise AnnotationFileError(f"{path} is not UTF-8 text JSON ({err})") from err
    if not isinstance(data, dict):
        raise AnnotationFileError(f"{path} is not a COCO annotation file (top level is not an object)")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise AnnotationFileError(
                f"{path} is not a COCO instances file: it has no {key!r} list")
    return data


def _parse_images(data: dict, path: Path) -> dict[int, dict]:
    images = {}
    for i, img in enumerate(data["images"]):
        try:
            image_id, file_name = int(img["id"]), str(img["file_name"])
            height, width = int(img["height"]), int(img["width"])
        except (KeyError, TypeError, ValueError) as err:
            raise AnnotationFileError(
                f"{path}: images[{i}] lacks a valid id, file_name, height or width ({err!r})") from err
        images[image_id] = {"file_name": file_name, "height": height, "width": width}
    return images


def _parse_categories(data: dict, path: Path) -> dict[int, str]:
    try:
        return {int(c["id"]): str(c["name"]) for c in data["categories"]}
    except (KeyError, TypeError, ValueError) as err:
        raise AnnotationFileError(f"{path}: a category lacks a valid id or name ({err!r})") from err


def _parse_annotation(ann, categories: dict[int, str]) -> Instance:
    """One annotation as an Instance; KeyError/TypeError/ValueError when malformed."""
    bbox = ann["bbox"]
    if len(bbox) != 4:
        raise ValueError(f"bbox has {len(bbox)} values, not 4")
    category_id = int(ann["category_id"])
    return Instance(
        annotation_id=int(ann["id"]),
        image_id=int(ann["image_id"]),
        category_id=category_id,
        category=categories.get(category_id, str(category_id)),
        area=float(ann["area"]),
        bbox_xyxy=bbox_xywh_to_xyxy(bbox),
        iscrowd=bool(ann.get("iscrowd", 0)),
        segmentation=ann["segmentation"],
    )


def load_coco_instances(annotations: str | Path, images_dir: str | Path, *,
                        include_crowd: bool = False, min_area: float = 0.0,
                        max_images: int | None = None) -> CocoInstances:
    """Read a COCO instances file and select the images and instances to evaluate.

    Images are taken in order of image id, only those with at least one annotation; `max_images`
    keeps the first N of them. Instances within an image are ordered by annotation id. Crowd
    regions are skipped unless `include_crowd`; annotations whose `area` is below `min_area`
    are skipped. Annotations of unknown images, malformed annotations, bboxes that cannot be a
    box prompt (`bbox_problem`) and images whose file is missing are skipped with a reason
    (`skipped`). Unreadable images and empty or undecodable
    masks are found later, when `iter_images` reads them.

    Raises AnnotationFileError when the file is missing, not JSON, or not COCO instances.
    """
    annotations, images_dir = Path(annotations), Path(images_dir)
    data = _load_json(annotations)
    images = _parse_images(data, annotations)
    categories = _parse_categories(data, annotations)
    skipped: list[Skipped] = []
    per_image: dict[int, list[Instance]] = {}
    for i, ann in enumerate(data["annotations"]):
        try:
            inst = _parse_annotation(ann, categories)
        except (KeyError, TypeError, ValueError) as err:
            ids = ann if isinstance(ann, dict) else {}
            skipped.append(Skipped(_int_or_none(ids.get("image_id")), _int_or_none(ids.get("id")),
                                   SKIP_MALFORMED, f"annotations[{i}]: {type(err).__name__}: {err}"))
            continue
        if inst.image_id not in images:
            skipped.append(Skipped(inst.image_id, inst.annotation_id, SKIP_UNKNOWN_IMAGE,
                                   f"image id {inst.image_id} is not in the file's 'images'"))
            continue
        info = images[inst.image_id]
        problem = bbox_problem(inst.bbox_xyxy, info["height"], info["width"])
        if problem is not None:
            skipped.append(Skipped(inst.image_id, inst.annotation_id, SKIP_INVALID_BBOX,
                                   f"annotations[{i}]: {problem}"))
            continue
        per_image.setdefault(inst.image_id, []).append(inst)

    image_ids = sorted(per_image)
    if max_images is not None:
        image_ids = image_ids[:max_images]
    selected: list[ImageEntry] = []
    for image_id in image_ids:
        info = images[image_id]
        keep = []
        for inst in sorted(per_image[image_id], key=lambda a: a.annotation_id):
            if inst.iscrowd and not include_crowd:
                skipped.append(Skipped(image_id, inst.annotation_id, SKIP_CROWD, "crowd region"))
            elif inst.area < min_area:
                skipped.append(Skipped(image_id, inst.annotation_id, SKIP_BELOW_MIN_AREA,
                                       f"area {inst.area:g} < --min-area {min_area:g}"))
            else:
                keep.append(inst)
        if not keep:
            continue
        path = images_dir / info["file_name"]
        if not path.is_file():
            skipped.extend(Skipped(image_id, inst.annotation_id, SKIP_MISSING_IMAGE, str(path))
                           for inst in keep)
            continue
        selected.append(ImageEntry(image_id, info["file_name"], info["height"], info["width"],
                                   path, tuple(keep)))
    return CocoInstances(annotations, images_dir, selected, categories, skipped)


def _int_or_none(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def read_image(entry: ImageEntry) -> np.ndarray:
    """The image as [H, W, 3] uint8 RGB, pixels as stored (EXIF orientation is not applied,
    as COCO's annotations refer to the stored pixels), read as `segapp segment` reads images for
    COCO prompts (segapp.formats.images). Raises ValueError when unreadable or when its size
    differs from the annotation file's (checked from the header, before decoding)."""
    def check_size(wh: tuple[int, int]) -> None:
        if tuple(wh) != (entry.width, entry.height):
            raise _SizeMismatch(f"{entry.path} is {wh[0]}x{wh[1]}, the annotations say "
                                f"{entry.width}x{entry.height}")

    try:
        return image_files.read_image(entry.path, stored_pixels=True, check_size=check_size)
    except _SizeMismatch:
        raise
    except (ValueError, OSError) as err:
        raise ValueError(f"cannot decode image {entry.path}: {err}") from err


class _SizeMismatch(ValueError):
    pass


def read_image_or_skip(entry: ImageEntry, skipped: list[Skipped]) -> np.ndarray | None:
    """`read_image(entry)`, or None after appending every instance of the image to `skipped`
    (reason: size mismatch, or unreadable)."""
    try:
        return read_image(entry)
    except ValueError as err:
        reason = SKIP_IMAGE_SIZE if isinstance(err, _SizeMismatch) else SKIP_UNREADABLE_IMAGE
        skipped.extend(Skipped(entry.image_id, inst.annotation_id, reason, str(err)) for inst in entry.instances)
        return None


def iter_images(dataset: CocoInstances, skipped: list[Skipped] | None = None) -> Iterator[
        tuple[ImageEntry, np.ndarray, list[tuple[Instance, np.ndarray]]]]:
    """Yield `(entry, image [H, W, 3] uint8 RGB, [(instance, mask [H, W] bool), ...])` per image.

    Instances of unreadable images, malformed segmentations and empty masks are appended to
    `skipped` (when given) as they are met; images left with no instance are not yielded.
    """
    found: list[Skipped] = [] if skipped is None else skipped
    for entry in dataset.images:
        image = read_image_or_skip(entry, found)
        if image is None:
            continue
        pairs = []
        for inst in entry.instances:
            try:
                mask = decode_segmentation(inst.segmentation, entry.height, entry.width)
            except (ValueError, TypeError, KeyError) as err:
                reason = SKIP_INVALID_POLYGON if isinstance(err, InvalidPolygonError) else SKIP_MALFORMED
                found.append(Skipped(entry.image_id, inst.annotation_id, reason,
                                     f"segmentation: {err}"))
                continue
            if not mask.any():
                found.append(Skipped(entry.image_id, inst.annotation_id, SKIP_EMPTY_MASK,
                                     "the decoded mask has no pixel"))
                continue
            pairs.append((inst, mask))
        if pairs:
            yield entry, image, pairs
