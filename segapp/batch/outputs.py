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

import colorsys
import errno
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from segapp.batch.inputs import Input

logger = logging.getLogger(__name__)

TMP_SUFFIX = ".segapp-tmp"
STATE_DIR = ".segapp"
MANIFEST = "manifest.jsonl"
COCO_RESULTS = "coco_results.json"
COCO_IMAGES = "coco_images.json"
FORMATS = ("png", "coco", "overlay", "mot", "mots", "ytvis")
# Outputs of videos only (images write none of them): segapp.batch.tracks.
VIDEO_FORMATS = ("mot", "mots", "ytvis")
YTVIS_RESULTS = "ytvis_results.json"
YTVIS_VIDEOS = "ytvis_videos.json"
OVERLAY_ALPHA = 0.5
JPEG_QUALITY = 90
MAX_8BIT_ID = 255
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


def paint(masks: Iterable[np.ndarray], ids: Iterable[int], hw: tuple[int, int]) -> np.ndarray:
    """Overlapping binary masks -> one [H, W] uint16 instance-id map.

    Masks are painted largest first, so where they overlap the smaller object stays visible
    (an object inside another keeps its pixels). Ties keep the given order.
    """
    masks = [np.asarray(m, dtype=bool) for m in masks]
    ids = list(ids)
    areas = [int(m.sum()) for m in masks]
    id_map = np.zeros(hw, dtype=np.uint16)
    for k in sorted(range(len(masks)), key=lambda k: -areas[k]):
        id_map[masks[k]] = ids[k]
    return id_map


def encode_id_png(id_map: np.ndarray, sixteen_bit: bool | None = None) -> bytes:
    """[H, W] ids -> PNG bytes: 8-bit when every id fits (<= 255), else 16-bit.

    sixteen_bit: force the depth (a video uses one depth for all its frames).
    """
    import cv2

    if id_map.ndim != 2:
        raise ValueError(f"id_map must be [H, W], got shape {id_map.shape}")
    top = int(id_map.max()) if id_map.size else 0
    if sixteen_bit is None:
        sixteen_bit = top > MAX_8BIT_ID
    if not sixteen_bit and top > MAX_8BIT_ID:
        raise ValueError(f"id {top} does not fit an 8-bit PNG")
    data = id_map.astype(np.uint16 if sixteen_bit else np.uint8)
    ok, buf = cv2.imencode(".png", data)
    if not ok:
        raise RuntimeError("OpenCV could not encode the instance-id PNG")
    return buf.tobytes()


def read_id_png(path: str | Path) -> np.ndarray:
    """Instance-id PNG (8- or 16-bit) -> [H, W] uint16."""
    import cv2

    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ValueError(f"cannot read PNG {path}")
    return arr.astype(np.uint16)


def colour(instance_id: int) -> tuple[int, int, int]:
    """A stable, well-spread RGB colour for an instance id (golden-ratio hues)."""
    hue = (instance_id * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def overlay(rgb: np.ndarray, id_map: np.ndarray) -> np.ndarray:
    """Blend each instance's colour over the image: [H, W, 3] uint8 RGB."""
    ids = np.unique(id_map)
    ids = ids[ids > 0]
    lut = np.zeros((int(ids.max()) + 1 if len(ids) else 1, 3), dtype=np.float32)
    for i in ids:
        lut[i] = colour(int(i))
    tint = lut[id_map] if len(ids) else np.zeros_like(rgb, dtype=np.float32)
    out = rgb.astype(np.float32)
    fg = id_map > 0
    out[fg] = (1 - OVERLAY_ALPHA) * out[fg] + OVERLAY_ALPHA * tint[fg]
    return out.round().astype(np.uint8)


def encode_jpeg(rgb: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("OpenCV could not encode the overlay JPEG")
    return buf.tobytes()


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
    from pycocotools import mask as mask_utils

    from segapp.amg import mask_to_coco_rle

    out = []
    for obj in seg.objects:
        rle = mask_to_coco_rle(seg.id_map == obj["instance_id"])
        coded = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
        out.append(ObjectMask(int(obj["instance_id"]), int(obj.get("category_id", 1)), float(obj["score"]), rle,
                              [float(v) for v in mask_utils.toBbox(coded)], int(mask_utils.area(coded))))
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


# ---------------------------------------------------------------------------- video overlays
class VideoOverlayWriter:
    """Writes overlay frames to an MP4, atomically (renamed into place by `close`).

    H.264 (yuv420p, plays in browsers) with PyAV when it is installed; otherwise OpenCV's
    mp4v, which most desktop players but no browser can play (a log line says so).
    """

    def __init__(self, path: Path, fps: float) -> None:
        self.path = path
        self.fps = fps if fps and fps > 0 else 25.0
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")
        self._av = None
        self._cv = None
        self._stream = None
        self._container = None

    def _open(self, h: int, w: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            import av
        except ImportError:
            av = None
        if av is not None:
            from fractions import Fraction

            self._av = av
            self._container = av.open(str(self.tmp), mode="w", format="mp4")
            self._stream = self._container.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(1000))
            # yuv420p needs even sides; odd sides are padded by one pixel.
            self._stream.width, self._stream.height = w + w % 2, h + h % 2
            self._stream.pix_fmt = "yuv420p"
            # One thread: x264's output is then the same bytes on every run.
            self._stream.codec_context.options = {"threads": "1"}
        else:
            import cv2

            logger.info("PyAV is not installed: writing %s as mp4v (not playable in browsers; "
                        "`pip install av` for H.264)", self.path.name)
            self._cv = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))

    def write(self, rgb: np.ndarray) -> None:
        h, w = rgb.shape[:2]
        if self._container is None and self._cv is None:
            self._open(h, w)
        if self._av is not None:
            if h % 2 or w % 2:
                rgb = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
            frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        else:
            self._cv.write(np.ascontiguousarray(rgb[..., ::-1]))

    def close(self) -> None:
        """Flush and rename into place (a video with no frames writes nothing)."""
        if self._av is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
        elif self._cv is not None:
            self._cv.release()
        else:
            return
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        try:
            if self._container is not None:
                self._container.close()
            if self._cv is not None:
                self._cv.release()
        finally:
            self.tmp.unlink(missing_ok=True)


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
