"""Writers for `segapp segment`: every file is written atomically, so a run can be resumed.

Layout under the output folder (see docs/segment.md):

    <stem>.png                 instance ids of an image (8-bit, 16-bit above 255 objects)
    <stem>.overlay.jpg         optional overlay of an image
    <stem>/000000.png ...      instance ids of each frame of a video
    <stem>.overlay.mp4         optional overlay of a video
    coco_results.json          COCO results (RLE masks) of the whole run, for loadRes
    coco_images.json           the matching COCO image list and categories
    <stem>.mot.txt, <stem>.mots.txt, ytvis_results.json, ytvis_videos.json
                               tracking outputs of videos (segapp.batch.tracks)
    manifest.jsonl             one line per input: input, outputs, status, seconds, error, target
    .segapp/                   per-input state of the run (records, COCO fragments)

Atomic: a file is written under a temporary name in its folder, then renamed over the
final name (`os.replace`), so a killed run leaves complete files or none; temporary files
carry TMP_SUFFIX and are swept at the start of the next run. An input counts as done only
when its record (written last, also atomically) exists and lists outputs that all exist.
"""
from __future__ import annotations

import errno
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segapp.batch.inputs import Input
from segapp.formats.coco import mask_fields
from segapp.formats.id_maps import encode_id_png, read_id_png  # noqa: F401 (the writer's API)
from segapp.formats.mp4 import TMP_SUFFIX
from segapp.formats.overlay import OVERLAY_ALPHA, tint

logger = logging.getLogger(__name__)

STATE_DIR = ".segapp"
MANIFEST = "manifest.jsonl"
COCO_RESULTS = "coco_results.json"
COCO_IMAGES = "coco_images.json"
FORMATS = ("png", "coco", "overlay", "mot", "mots", "ytvis")
# Outputs of videos only (images write none of them): segapp.batch.tracks.
VIDEO_FORMATS = ("mot", "mots", "ytvis")
YTVIS_RESULTS = "ytvis_results.json"
YTVIS_VIDEOS = "ytvis_videos.json"
JPEG_QUALITY = 90
# OSError numbers that no input can avoid (disk full, quota, read-only filesystem): the run
# stops at once instead of failing every remaining input.
STOP_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


class OutputStopped(RuntimeError):
    """The output folder cannot be written any more; the message says what to do (one line)."""


def stops_run(err: BaseException) -> bool:
    """Whether `err` means the output folder cannot be written at all (see STOP_ERRNOS)."""
    return isinstance(err, OSError) and err.errno in STOP_ERRNOS


# ---------------------------------------------------------------------------- atomic files
def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk keeps no half-written file
        raise


def sweep_temporaries(out: Path) -> int:
    """Delete temporary files a killed run left under `out`; returns how many."""
    count = 0
    for tmp in out.rglob(f"*{TMP_SUFFIX}"):
        tmp.unlink(missing_ok=True)
        count += 1
    return count


def dump_json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode("utf-8")


# ---------------------------------------------------------------------------- instance maps
@dataclass
class Segmentation:
    """The result for one image or frame.

    id_map: [H, W] uint16, 0 background, else the instance id of the pixel's object.
    objects: one dict per object: {"instance_id", "score", "category_id"}.
    sixteen_bit: the PNG depth to write; None: 16-bit only when an id is above 255 (a video
      sets it for all its frames, so that they share one depth).
    """

    id_map: np.ndarray
    objects: list[dict[str, Any]] = field(default_factory=list)
    sixteen_bit: bool | None = None


def encode_jpeg(rgb: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("OpenCV could not encode the overlay JPEG")
    return buf.tobytes()


def overlay(rgb: np.ndarray, id_map: np.ndarray) -> np.ndarray:
    """Blend each instance's colour (segapp.formats.overlay.id_colour) over the image: [H, W, 3] uint8 RGB."""
    return tint(rgb, id_map, alpha=OVERLAY_ALPHA)


# ---------------------------------------------------------------------------- COCO
@dataclass(frozen=True)
class ObjectMask:
    """One object's pixels in a result (exactly its id's pixels in the PNG).

    rle: COCO compressed RLE {"size": [H, W], "counts": str}. bbox: [x, y, w, h] of its pixels
    (w, h in pixels; zeros when empty). area: its pixel count."""

    instance_id: int
    category_id: int
    score: float
    rle: dict[str, Any]
    bbox: list[float]
    area: int


def object_masks(seg: Segmentation) -> list[ObjectMask]:
    """Each object of `seg` encoded once, for every output that needs its mask (COCO, MOT,
    MOTS, YouTube-VIS); objects covered entirely by others get an empty mask."""
    out = []
    for obj in seg.objects:
        fields = mask_fields(seg.id_map == obj["instance_id"])
        out.append(ObjectMask(int(obj["instance_id"]), int(obj.get("category_id", 1)), float(obj["score"]),
                              fields["segmentation"], [float(v) for v in fields["bbox"]], fields["area"]))
    return out


def coco_annotations(seg: Segmentation, image_id: int, extra: dict[str, Any] | None = None,
                     objects: list[ObjectMask] | None = None) -> list[dict[str, Any]]:
    """COCO result entries (compressed RLE) for each object of `seg`; the masks are exactly
    the PNG's pixels of each id (objects covered entirely by others get an empty mask).
    objects: `object_masks(seg)` when the caller has them already."""
    anns = []
    for obj in object_masks(seg) if objects is None else objects:
        entry = {
            "image_id": int(image_id),
            "category_id": obj.category_id,
            "segmentation": dict(obj.rle),
            "score": round(obj.score, 6),
            "bbox": list(obj.bbox),
            "area": obj.area,
            "instance_id": obj.instance_id,
        }
        entry.update(extra or {})
        anns.append(entry)
    return anns


# ---------------------------------------------------------------------------- per-input state
class RunState:
    """Per-input records and COCO fragments under <out>/.segapp, and the run's final files."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.records_dir = out / STATE_DIR / "records"
        self.coco_dir = out / STATE_DIR / "coco"
        self.ytvis_dir = out / STATE_DIR / "ytvis"

    def start(self, signature: dict[str, Any], resume: bool) -> bool:
        """Begin a run: sweep temporaries, and keep the previous run's records only when
        resuming the same run (same signature: model, checkpoint, prompts, formats, options).
        Returns whether earlier records were kept."""
        self.out.mkdir(parents=True, exist_ok=True)
        sweep_temporaries(self.out)
        sig_path = self.out / STATE_DIR / "run.json"
        try:
            previous = json.loads(sig_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = None
        keep = resume and previous == json.loads(json.dumps(signature))
        if not keep:
            if previous is not None and resume:
                logger.warning("%s holds a run with other settings: starting afresh", self.out)
            for folder in (self.records_dir, self.coco_dir, self.ytvis_dir):
                if folder.is_dir():
                    for f in folder.iterdir():
                        f.unlink()
        atomic_write(sig_path, json.dumps(signature, indent=1, sort_keys=True).encode("utf-8"))
        return keep

    def record_path(self, item: Input) -> Path:
        return self.records_dir / f"{item.key}.json"

    def coco_path(self, item: Input) -> Path:
        return self.coco_dir / f"{item.key}.json"

    def ytvis_path(self, item: Input) -> Path:
        return self.ytvis_dir / f"{item.key}.json"

    def load_record(self, item: Input) -> dict[str, Any] | None:
        try:
            return json.loads(self.record_path(item).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def is_complete(self, item: Input, formats: tuple[str, ...]) -> bool:
        """True when a previous run finished `item` successfully with the same formats
        and every output it listed is still there."""
        record = self.load_record(item)
        if not record or record.get("status") not in ("ok", "skipped") \
                or tuple(record.get("formats", ())) != formats:
            return False
        if record["status"] == "ok" and "coco" in formats and not self.coco_path(item).is_file():
            return False
        if record["status"] == "ok" and "ytvis" in formats and record.get("kind") == "video" \
                and not self.ytvis_path(item).is_file():
            return False
        return all((self.out / p).is_file() for p in record.get("outputs", ()))

    def save(self, item: Input, record: dict[str, Any], coco: list[dict[str, Any]] | None,
             ytvis: dict[str, Any] | None = None) -> None:
        """Save an input's COCO fragment and (a video's) YouTube-VIS fragment {"video", "results"},
        then its record (last: it marks the input done)."""
        if coco is not None:
            atomic_write(self.coco_path(item), dump_json(coco))
        if ytvis is not None:
            atomic_write(self.ytvis_path(item), dump_json(ytvis))
        atomic_write(self.record_path(item), dump_json(record))

    def finalise(self, items: list[Input], formats: tuple[str, ...],
                 categories: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Write manifest.jsonl (and the merged COCO files) from the saved records, in input
        order; returns the records. Inputs without a record (never reached) are absent."""
        found = [(item, r) for item, r in ((item, self.load_record(item)) for item in items) if r is not None]
        records = [r for _, r in found]
        atomic_write(self.out / MANIFEST, b"".join(
            json.dumps({**{k: r.get(k) for k in ("input", "kind", "outputs", "status", "masks", "seconds", "error")},
                        "target": item.target}, sort_keys=False).encode("utf-8") + b"\n" for item, r in found))
        if "coco" in formats:
            results: list[dict[str, Any]] = []
            images: list[dict[str, Any]] = []
            for item in items:
                record = self.load_record(item)
                if not record or record.get("status") != "ok":
                    continue
                images += record.get("coco_images", [])
                try:
                    results += json.loads(self.coco_path(item).read_text(encoding="utf-8"))
                except (OSError, ValueError) as err:
                    raise RuntimeError(f"COCO fragment of {item.rel} is missing or damaged: {err}") from err
            atomic_write(self.out / COCO_RESULTS, json.dumps(results).encode("utf-8"))
            atomic_write(self.out / COCO_IMAGES, json.dumps(
                {"images": images, "annotations": [], "categories": categories}).encode("utf-8"))
        if "ytvis" in formats:
            videos: list[dict[str, Any]] = []
            tracks: list[dict[str, Any]] = []
            for item, record in found:
                if record.get("status") != "ok" or record.get("kind") != "video":
                    continue
                try:
                    fragment = json.loads(self.ytvis_path(item).read_text(encoding="utf-8"))
                except (OSError, ValueError) as err:
                    raise RuntimeError(f"YouTube-VIS fragment of {item.rel} is missing or damaged: {err}") from err
                videos.append(fragment["video"])
                tracks += fragment["results"]
            atomic_write(self.out / YTVIS_RESULTS, json.dumps(tracks).encode("utf-8"))
            atomic_write(self.out / YTVIS_VIDEOS, json.dumps(
                {"videos": videos, "annotations": [], "categories": categories}).encode("utf-8"))
        return records

    def stopped(self, err: OSError, items: list[Input], formats: tuple[str, ...],
                categories: list[dict[str, Any]]) -> OutputStopped:
        """The error that stops a run after `err` (see `stops_run`): first the manifest of the
        inputs finished so far is written (not the merged COCO and YouTube-VIS files: the rerun
        writes them), when the folder still takes it. Each finished input's record is already
        saved, so rerunning the same command continues from there."""
        manifest_only = tuple(f for f in formats if f not in ("coco", "ytvis"))
        try:
            finished = len(self.finalise(items, manifest_only, categories))
            saved = f"the manifest lists the {finished} inputs finished so far"
        except OSError:
            saved = "the manifest could not be written either"
        return OutputStopped(f"cannot write to the output folder {self.out}: {err.strerror or err} "
                             f"({saved}); make room or make it writable, then rerun the same command "
                             f"to continue")
