"""Prompts files for `segapp segment`: segapp's own JSON schema, or a COCO annotation file.

segapp's schema (documented with an example in docs/segment.md):

    {
      "default": "skip",                      # inputs not listed: "skip" or "everything"
      "images": {
        "photos/cat.jpg": [                   # key: path relative to the run's root, or file name
          {"id": 1, "box": [x0, y0, x1, y1]},
          {"id": 2, "points": [[x, y], ...], "labels": [1, 0, ...]}
        ]
      },
      "videos": {
        "clips/run.mp4": {"0": [{"id": 1, "points": [[x, y]], "labels": [1]}], "30": [...]}
      }
    }

Each object needs points (with one label per point: 1 foreground, 0 background), a box
(pixels, x0 y0 x1 y1), or both. `id` (1..65535) is the object's value in the instance-id
PNG and its track id in videos; it defaults to the object's position in the list, from 1.

A COCO annotation file (keys "images" and "annotations") is read as box prompts: each
non-crowd annotation's bbox (x, y, w, h) prompts one object of that image, matched by file
name; results keep the file's image ids and category ids, so they can be scored with
COCOeval against the same file. COCO boxes are in stored-pixel coordinates: with a COCO file
the images are read as stored (EXIF orientation not applied, as `segapp eval coco` does), and
an image whose size differs from the file's width and height fails with a message.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DEFAULTS = ("skip", "everything")
MAX_OBJECT_ID = 65535  # the largest value of a 16-bit instance-id PNG
DEFAULT_CATEGORY = {"id": 1, "name": "object"}


class PromptsError(ValueError):
    """A prompts file that cannot be used; the message names the file and the bad entry."""


@dataclass(frozen=True)
class ObjectPrompt:
    """Prompts for one object.

    obj_id: instance id (1..65535). points: [N, 2] float xy pixels or None; labels: [N] int
    or None; box: [4] float xyxy pixels or None. category_id: COCO category of the result.
    """

    obj_id: int
    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    box: np.ndarray | None = None
    category_id: int = 1


@dataclass
class Prompts:
    """Parsed prompts: per image a list of objects, per video {frame index: objects}."""

    images: dict[str, list[ObjectPrompt]] = field(default_factory=dict)
    videos: dict[str, dict[int, list[ObjectPrompt]]] = field(default_factory=dict)
    default: str = "skip"
    source: str = "segapp"  # or "coco"
    image_ids: dict[str, int] = field(default_factory=dict)  # COCO: file name -> image id
    image_sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # COCO: file name -> (h, w)
    categories: list[dict[str, Any]] = field(default_factory=lambda: [dict(DEFAULT_CATEGORY)])

    def _lookup(self, table: dict, rel: str):
        if rel in table:
            return table[rel]
        return table.get(Path(rel).name)

    def for_image(self, rel: str) -> list[ObjectPrompt] | None:
        """The objects of image `rel` (relative path), or None when it is not listed."""
        return self._lookup(self.images, rel)

    def for_video(self, rel: str) -> dict[int, list[ObjectPrompt]] | None:
        return self._lookup(self.videos, rel)

    def image_id(self, rel: str) -> int | None:
        """The COCO file's id of image `rel`, when the prompts came from a COCO file."""
        return self._lookup(self.image_ids, rel)

    @property
    def stored_pixels(self) -> bool:
        """Whether images are read as stored, EXIF orientation not applied (COCO boxes refer
        to the stored pixels); else as viewers show them (EXIF orientation applied)."""
        return self.source == "coco"

    def check_size(self, rel: str, hw: tuple[int, int]) -> None:
        """Raise ValueError when the COCO file gives image `rel` another size than `hw`."""
        size = self._lookup(self.image_sizes, rel)
        if size is not None and tuple(size) != tuple(hw):
            raise ValueError(f"the COCO file says this image is {size[1]}x{size[0]}, it is {hw[1]}x{hw[0]} as "
                             f"stored (COCO boxes are in stored pixels; EXIF orientation is not applied)")

    def unmatched(self, rels: list[str]) -> list[str]:
        """Keys of the prompts file that match none of the inputs `rels`."""
        known = set(rels) | {Path(r).name for r in rels}
        return sorted(k for k in (*self.images, *self.videos) if k not in known)


def load(path: str | Path) -> Prompts:
    """Read and validate a prompts file (segapp schema or COCO annotations)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise PromptsError(f"cannot read prompts file {path}: {err.strerror or err}") from err
    try:
        text = raw.decode("utf-8-sig")  # a leading byte-order mark is allowed
    except UnicodeDecodeError as err:
        raise PromptsError(f"{path}: not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start}); "
                           f"save it as UTF-8, as JSON requires") from err
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise PromptsError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})") from err
    if isinstance(data, dict) and "annotations" in data and "images" in data:
        return parse_coco(data, str(path))
    return parse(data, str(path))


def parse(data: Any, where: str = "prompts") -> Prompts:
    """Validate segapp's prompts schema (already decoded JSON)."""
    if not isinstance(data, dict):
        raise PromptsError(f"{where}: the top level must be an object with \"images\" and/or \"videos\"")
    unknown = set(data) - {"default", "images", "videos", "version"}
    if unknown:
        raise PromptsError(f"{where}: unknown key(s) {sorted(unknown)}; expected \"images\", \"videos\", \"default\"")
    default = data.get("default", "skip")
    if default not in DEFAULTS:
        raise PromptsError(f"{where}: \"default\" must be one of {list(DEFAULTS)}, got {default!r}")
    prompts = Prompts(default=default)
    images = data.get("images", {})
    if not isinstance(images, dict):
        raise PromptsError(f"{where}: \"images\" must map image paths to lists of objects")
    for key, objects in images.items():
        prompts.images[key] = _objects(objects, f"{where}: images[{key!r}]")
    videos = data.get("videos", {})
    if not isinstance(videos, dict):
        raise PromptsError(f"{where}: \"videos\" must map video paths to {{frame index: objects}}")
    for key, frames in videos.items():
        if not isinstance(frames, dict) or not frames:
            raise PromptsError(f"{where}: videos[{key!r}] must be a non-empty object "
                               "{\"frame index\": [objects]}")
        parsed: dict[int, list[ObjectPrompt]] = {}
        for frame, objects in frames.items():
            try:
                index = int(frame)
            except ValueError:
                index = -1
            if index < 0:
                raise PromptsError(f"{where}: videos[{key!r}]: frame key {frame!r} is not a frame index (0, 1, ...)")
            parsed[index] = _objects(objects, f"{where}: videos[{key!r}][{frame!r}]")
        prompts.videos[key] = dict(sorted(parsed.items()))
    return prompts


def _objects(objects: Any, where: str) -> list[ObjectPrompt]:
    if not isinstance(objects, list):
        raise PromptsError(f"{where}: expected a list of objects")
    out: list[ObjectPrompt] = []
    seen: set[int] = set()
    for i, obj in enumerate(objects):
        at = f"{where}[{i}]"
        if not isinstance(obj, dict):
            raise PromptsError(f"{at}: expected an object with \"points\"/\"labels\" and/or \"box\"")
        unknown = set(obj) - {"id", "points", "labels", "box", "category_id"}
        if unknown:
            raise PromptsError(f"{at}: unknown key(s) {sorted(unknown)}")
        obj_id = obj.get("id", i + 1)
        if isinstance(obj_id, bool) or not isinstance(obj_id, int) or not 1 <= obj_id <= MAX_OBJECT_ID:
            raise PromptsError(f"{at}.id: must be an integer in 1..{MAX_OBJECT_ID}, got {obj_id!r}")
        if obj_id in seen:
            raise PromptsError(f"{at}.id: id {obj_id} is used twice")
        seen.add(obj_id)
        points = labels = box = None
        if "points" in obj or "labels" in obj:
            points = _numbers(obj.get("points"), f"{at}.points", shape=(-1, 2))
            labels = _numbers(obj.get("labels"), f"{at}.labels", shape=(-1,))
            if len(points) == 0:
                raise PromptsError(f"{at}.points: empty; leave \"points\" out for none")
            if len(labels) != len(points):
                raise PromptsError(f"{at}: {len(points)} points but {len(labels)} labels (one label per point)")
            if not np.isin(labels, (0, 1)).all():
                raise PromptsError(f"{at}.labels: must be 1 (foreground) or 0 (background)")
            labels = labels.astype(np.int32)
        if "box" in obj:
            box = _numbers(obj["box"], f"{at}.box", shape=(4,))
            if box[2] < box[0] or box[3] < box[1]:
                raise PromptsError(f"{at}.box: {box.tolist()} has x1 < x0 or y1 < y0; boxes are [x0, y0, x1, y1]")
        if points is None and box is None:
            raise PromptsError(f"{at}: needs \"points\" with \"labels\", or a \"box\"")
        category = obj.get("category_id", 1)
        if isinstance(category, bool) or not isinstance(category, int):
            raise PromptsError(f"{at}.category_id: must be an integer, got {category!r}")
        out.append(ObjectPrompt(obj_id, points, labels, box, category))
    return out


def _numbers(value: Any, where: str, shape: tuple[int, ...]) -> np.ndarray:
    if value is None:
        raise PromptsError(f"{where}: missing")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise PromptsError(f"{where}: expected numbers, got {json.dumps(value)[:60]}") from err
    if arr.size == 0 and len(shape) == 2:
        arr = arr.reshape(0, shape[1])
    if arr.ndim != len(shape) or any(s not in (-1, a) for s, a in zip(shape, arr.shape)):
        want = {(4,): "4 numbers [x0, y0, x1, y1]", (-1, 2): "a list of [x, y] pairs",
                (-1,): "a list of numbers"}[shape]
        raise PromptsError(f"{where}: expected {want}, got {json.dumps(value)[:60]}")
    if not all(math.isfinite(v) for v in arr.ravel()):
        raise PromptsError(f"{where}: contains NaN or infinity")
    return arr


def parse_coco(data: dict[str, Any], where: str = "annotations") -> Prompts:
    """COCO annotations -> box prompts, one object per non-crowd annotation, by file name.

    Ids (image, annotation, category) must be integers, as COCO defines them and as the
    results written from them are."""
    if not isinstance(data.get("images"), list) or not isinstance(data.get("annotations"), list):
        raise PromptsError(f"{where}: a COCO file needs lists \"images\" and \"annotations\"")
    prompts = Prompts(source="coco", categories=_coco_categories(data.get("categories"), where))
    names: dict[int, str] = {}
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict) or "id" not in img or "file_name" not in img:
            raise PromptsError(f"{where}: images[{i}] needs \"id\" and \"file_name\"")
        image_id = _coco_id(img["id"], f"{where}: images[{i}].id")
        name = img["file_name"]
        if not isinstance(name, str) or not name:
            raise PromptsError(f"{where}: images[{i}].file_name: must be a file name, got {name!r}")
        if image_id in names:
            raise PromptsError(f"{where}: images[{i}].id: id {image_id} is used twice")
        names[image_id] = name
        prompts.image_ids[name] = image_id
        prompts.images[name] = []
        h, w = img.get("height"), img.get("width")
        if _is_int(h) and _is_int(w) and h > 0 and w > 0:
            prompts.image_sizes[name] = (h, w)
    anns = [a for a in data["annotations"] if isinstance(a, dict)]
    if len(anns) != len(data["annotations"]):
        raise PromptsError(f"{where}: every annotation must be an object")
    for i, ann in enumerate(anns):
        at = f"{where}: annotations[{i}]"
        for key in ("id", "image_id", "category_id"):
            if key in ann:
                _coco_id(ann[key], f"{at}.{key}")
    for ann in sorted(anns, key=lambda a: (a.get("image_id", 0), a.get("id", 0))):
        at = f"{where}: annotation {ann.get('id', '?')}"
        if ann.get("iscrowd", 0):
            continue
        if ann.get("image_id") not in names:
            raise PromptsError(f"{at}: image_id {ann.get('image_id')!r} is not in \"images\"")
        x, y, w, h = _numbers(ann.get("bbox"), f"{at}.bbox", shape=(4,))
        if w < 0 or h < 0:
            raise PromptsError(f"{at}.bbox: negative width or height")
        objects = prompts.images[names[ann["image_id"]]]
        if len(objects) >= MAX_OBJECT_ID:
            raise PromptsError(f"{at}: more than {MAX_OBJECT_ID} objects in one image")
        objects.append(ObjectPrompt(len(objects) + 1, box=np.array([x, y, x + w, y + h]),
                                    category_id=ann.get("category_id", 1)))
    return prompts


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _coco_id(value: Any, where: str) -> int:
    if not _is_int(value):
        raise PromptsError(f"{where}: COCO ids are integers, got {json.dumps(value)[:40]}")
    return value


def _coco_categories(value: Any, where: str) -> list[dict[str, Any]]:
    """The file's categories (a list of {"id": int, "name": str, ...}), or the default one."""
    if value is None or value == []:
        return [dict(DEFAULT_CATEGORY)]
    if not isinstance(value, list):
        raise PromptsError(f"{where}: \"categories\" must be a list of {{\"id\": ..., \"name\": ...}} objects, "
                           f"got {json.dumps(value)[:40]}")
    for i, cat in enumerate(value):
        if not isinstance(cat, dict) or "id" not in cat or not isinstance(cat.get("name"), str):
            raise PromptsError(f"{where}: categories[{i}] must be an object with an integer \"id\" and a "
                               f"\"name\", got {json.dumps(cat)[:40]}")
        _coco_id(cat["id"], f"{where}: categories[{i}].id")
    return list(value)
