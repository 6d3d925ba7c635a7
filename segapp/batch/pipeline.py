"""The batch pipeline of `segapp segment`: per-input logic shared by both engines, and the
local engine.

Inputs are cut into chunks of `batch_size` consecutive inputs. A chunk's images go through
the image encoder together (`set_image_batch`); its videos are tracked one by one. Chunks
are fixed by the sorted input list, never by what a previous run finished: on resume a
chunk with anything left to do is recomputed whole (only the missing inputs are written),
so every image is always encoded in the same batch and a resumed run writes the same
bytes as an uninterrupted one.

The local engine overlaps three stages with two threads and bounded queues:

    reader thread:  decode the next chunks (images, video probes)      -> queue
    main thread:    the model (batched encoder, decoder, video tracker) -> queue
    writer thread:  instance-id PNGs, COCO fragments, overlays, records
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from functools import partial
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from segapp.batch.inputs import Input, image_id
from segapp.batch.outputs import (VIDEO_FORMATS, RunState, Segmentation, atomic_write, coco_annotations,
                                  encode_id_png, encode_jpeg, object_masks, overlay, stops_run)
from segapp.batch.prompts import MAX_OBJECT_ID, ObjectPrompt, Prompts
from segapp.formats.id_maps import MAX_8BIT_ID, instance_id_map
from segapp.formats.images import read_image
from segapp.formats.mp4 import Mp4Writer
from segapp.video.propagation import BACKWARD, FORWARD, propagate_both_ways

logger = logging.getLogger(__name__)

QUEUE_CHUNKS = 2  # decoded chunks waiting for the model
QUEUE_WRITES = 64  # results waiting for the writer
NO_PROMPTS = "no prompts for this input in the prompts file"


# ---------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class ModelSpec:
    """What every engine needs to build the same model: config name or path, checkpoint, device."""

    name: str
    checkpoint: str | None
    device: str | None = None


@dataclass(frozen=True)
class Options:
    """formats: subset of segapp.batch.outputs.FORMATS. batch_size: inputs per chunk (images per
    encoder batch). The rest configure segment-everything (AutomaticMaskGenerator)."""

    formats: tuple[str, ...] = ("png", "coco")
    batch_size: int = 4
    points_per_side: int = 32
    pred_iou_thresh: float = 0.8
    stability_score_thresh: float = 0.95
    resume: bool = True
    progress: bool = True
    # videos: the memory cross-attention kernels in bfloat16 (VideoPredictor attention_dtype)
    bf16_attention: bool = False
    # videos without prompts: segment everything every this many frames and track everything
    # (VideoAutoTracker); None: on the first frame only
    track_every: int | None = None


RANDOM_WEIGHTS_SEED = 0


def build_model(spec: ModelSpec):
    """The model of `spec`. Without a checkpoint (test configs) the random weights are drawn
    from a fixed seed, so that every process of every run (resumes, Ray actors) gets the same
    model; the global RNG is left as it was."""
    import torch

    import segapp

    if spec.checkpoint is not None:
        return segapp.build_model(spec.name, checkpoint=spec.checkpoint, device=spec.device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_WEIGHTS_SEED)
        return segapp.build_model(spec.name, checkpoint=None, device=spec.device)


def chunks(items: list[Input], batch_size: int) -> list[list[Input]]:
    return [items[i:i + batch_size] for i in range(0, len(items), batch_size)]


# ---------------------------------------------------------------------------- decoding
@dataclass
class Decoded:
    """One input, decoded. image: [H, W, 3] uint8 RGB; for videos, fps and num_frames from a probe."""

    item: Input
    image: np.ndarray | None = None
    fps: float = 0.0
    num_frames: int = 0
    error: str | None = None
    seconds: float = 0.0
    write: bool = True  # False: already complete, recomputed only to keep the chunk's batch


def probe_video(path: Path) -> tuple[float, int, np.ndarray]:
    """(fps, frame count, first frame RGB) of a video, or ValueError when it cannot be read."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise ValueError("not a readable video (empty, corrupt or unknown format)")
        ok, frame = cap.read()
        if not ok or frame is None:
            raise ValueError("video has no readable frame (empty or corrupt)")
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        return fps, count, np.ascontiguousarray(frame[..., ::-1])
    finally:
        cap.release()


def decode(item: Input, stored_pixels: bool = False) -> Decoded:
    start = time.perf_counter()
    result = Decoded(item)
    try:
        if item.kind == "image":
            result.image = read_image(item.path, stored_pixels=stored_pixels)
        elif item.kind == "video":
            result.fps, result.num_frames, result.image = probe_video(item.path)
        else:
            result.error = f"unsupported file type {item.path.suffix or '(no extension)'!r}"
    except Exception as err:  # noqa: BLE001 - any unreadable input is reported, never fatal
        result.error = str(err) if type(err) is ValueError else f"{type(err).__name__}: {err}"
    result.seconds = time.perf_counter() - start
    return result


# ---------------------------------------------------------------------------- the model side
class Segmenter:
    """Per-input model logic: prompted or segment-everything images (encoded in batches),
    and videos (prompts or segment-everything on the first frame, then tracking)."""

    def __init__(self, spec: ModelSpec, options: Options, prompts: Prompts | None) -> None:
        import segapp

        self.spec = spec
        self.options = options
        self.prompts = prompts
        self.model = build_model(spec)
        self.predictor = segapp.ImagePredictor(self.model)
        self._amg = None
        self._video = None

    # -------------------------------------------------------------- prompts
    def image_objects(self, item: Input) -> list[ObjectPrompt] | None:
        """Objects to segment (None: segment everything); raises LookupError to skip the input."""
        if self.prompts is None:
            return None
        objects = self.prompts.for_image(item.rel)
        if objects is None:
            if self.prompts.default == "everything":
                return None
            raise LookupError(NO_PROMPTS)
        return objects

    def video_objects(self, item: Input) -> dict[int, list[ObjectPrompt]] | None:
        if self.prompts is None:
            return None
        frames = self.prompts.for_video(item.rel)
        if frames is None:
            if self.prompts.default == "everything":
                return None
            raise LookupError(NO_PROMPTS)
        return frames

    @property
    def amg(self):
        if self._amg is None:
            import segapp

            self._amg = segapp.AutomaticMaskGenerator(
                self.model, points_per_side=self.options.points_per_side,
                pred_iou_thresh=self.options.pred_iou_thresh,
                stability_score_thresh=self.options.stability_score_thresh, output_mode="binary_mask")
        return self._amg

    # -------------------------------------------------------------- images
    def segment_images(self, decoded: list[Decoded]) -> list[Segmentation | Exception]:
        """One result (or the error) per decoded image; prompted images share one encoder batch."""
        results: list[Segmentation | Exception | None] = [None] * len(decoded)
        prompted: list[tuple[int, list[ObjectPrompt]]] = []
        for i, d in enumerate(decoded):
            try:
                objects = self.image_objects(d.item)
            except LookupError as err:
                results[i] = err
                continue
            if objects is not None and self.prompts.source == "coco":
                try:
                    self.prompts.check_size(d.item.rel, d.image.shape[:2])
                except ValueError as err:  # this image fails, the others go on
                    results[i] = err
                    continue
            if objects is None:
                try:
                    results[i] = self.segment_everything(d.image)
                except Exception as err:  # noqa: BLE001 - reported per input
                    results[i] = err
            else:
                prompted.append((i, objects))
        if prompted:
            try:
                self.predictor.set_image_batch([decoded[i].image for i, _ in prompted])
            except Exception as err:  # noqa: BLE001 - the whole batch failed; reported per input
                for i, _ in prompted:
                    results[i] = err
                return results
            for b, (i, objects) in enumerate(prompted):
                try:
                    results[i] = self._predict_objects(b, objects, decoded[i].image.shape[:2])
                except Exception as err:  # noqa: BLE001 - a bad prompt fails its input only
                    results[i] = err
            self.predictor.reset_predictor()
        return results

    def _predict_objects(self, batch_idx: int, objects: list[ObjectPrompt], hw: tuple[int, int]) -> Segmentation:
        """Decode all objects of image `batch_idx` of the current batch, in as few decoder calls
        as the prompts allow: objects with and without a box go separately, and single-click
        objects (ambiguous: three candidates, the best kept) apart from the others."""
        groups: dict[tuple[bool, bool], list[int]] = {}
        for k, obj in enumerate(objects):
            single_click = obj.box is None and obj.points is not None and len(obj.points) == 1
            groups.setdefault((obj.box is not None, single_click), []).append(k)
        masks: list[np.ndarray | None] = [None] * len(objects)
        scores = [0.0] * len(objects)
        for (has_box, multimask), members in groups.items():
            coords = labels = boxes = None
            with_points = [objects[k] for k in members if objects[k].points is not None]
            if with_points:
                n = max(len(o.points) for o in with_points)
                coords = np.zeros((len(members), n, 2))
                labels = np.full((len(members), n), -1, dtype=np.int32)  # -1: padding, ignored
                for row, k in enumerate(members):
                    if objects[k].points is not None:
                        coords[row, :len(objects[k].points)] = objects[k].points
                        labels[row, :len(objects[k].points)] = objects[k].labels
            if has_box:
                boxes = np.stack([objects[k].box for k in members])
            m, iou, _ = self.predictor._predict_one(coords, labels, boxes, None, multimask, False, True,
                                                    img_idx=batch_idx)
            m = m.reshape(len(members), -1, *hw)
            iou = iou.reshape(len(members), -1)
            best = iou.argmax(axis=1)
            for row, k in enumerate(members):
                masks[k] = m[row, best[row]] > 0.5
                scores[k] = float(iou[row, best[row]])
        ids = [o.obj_id for o in objects]
        return Segmentation(instance_id_map(masks, hw, ids), [
            {"instance_id": o.obj_id, "score": s, "category_id": o.category_id} for o, s in zip(objects, scores)])

    def segment_everything(self, image: np.ndarray) -> Segmentation:
        records = self.amg.generate(image)[:MAX_OBJECT_ID]
        records.sort(key=lambda r: -r["area"])
        ids = list(range(1, len(records) + 1))
        seg = Segmentation(instance_id_map([r["segmentation"] for r in records], image.shape[:2], ids), [
            {"instance_id": i, "score": r["predicted_iou"], "category_id": 1} for i, r in zip(ids, records)])
        present = set(np.unique(seg.id_map).tolist())
        seg.objects = [o for o in seg.objects if o["instance_id"] in present]  # fully covered ones
        return seg

    # -------------------------------------------------------------- videos
    @property
    def video_predictor(self):
        """A video predictor over the same model (one set of weights for images and videos)."""
        if self._video is None:
            try:
                from segapp.video.predictor import VideoPredictor
            except ImportError as err:
                raise RuntimeError(f"video support is not available in this segapp ({err})") from err
            import torch

            dtype = torch.bfloat16 if self.options.bf16_attention else torch.float32
            self._video = VideoPredictor(self.model, attention_dtype=dtype)
        return self._video

    def segment_video(self, d: Decoded) -> Iterator[tuple[int, Segmentation]]:
        """(frame index, result) for every frame, in order. Prompts on frame F: tracked forward
        from F, and backward from the first prompted frame to frame 0."""
        frames = self.video_objects(d.item)
        vp = self.video_predictor  # first: a model that cannot track (images only) fails at once
        if frames is None and self.options.track_every is not None:
            yield from self.track_everything(d)
            return
        first_masks: list[tuple[int, np.ndarray]] = []
        if frames is None:  # segment everything on the first frame, then track those masks
            first = self.segment_everything(d.image)
            first_masks = [(o["instance_id"], first.id_map == o["instance_id"]) for o in first.objects]
            frames = {0: []} if first_masks else {}
        state = vp.init_state(str(d.item.path))
        for obj_id, mask in first_masks:
            vp.add_new_mask(state, frame_idx=0, obj_id=obj_id, mask=mask)
        num_frames = state.num_frames
        hw = d.image.shape[:2]
        categories = {o.obj_id: o.category_id for objs in frames.values() for o in objs}
        categories.update({obj_id: 1 for obj_id, _ in first_masks})
        for frame_idx, objects in frames.items():
            if frame_idx >= num_frames:
                raise ValueError(f"prompts on frame {frame_idx}, but the video has {num_frames} frames")
            for o in objects:
                vp.add_new_points_or_box(state, frame_idx=frame_idx, obj_id=o.obj_id, points=o.points,
                                         labels=o.labels, box=o.box)

        sixteen = max(categories, default=0) > MAX_8BIT_ID  # one PNG depth for all frames

        def empty() -> Segmentation:
            return Segmentation(np.zeros(hw, np.uint16), sixteen_bit=sixteen)

        def result(obj_ids, logits) -> Segmentation:
            masks = (_to_numpy(logits)[:, 0] > 0.0)
            ids = [int(i) for i in obj_ids]
            return Segmentation(instance_id_map(masks, hw, ids), [
                {"instance_id": i, "score": 1.0, "category_id": categories.get(i, 1)} for i in ids],
                sixteen_bit=sixteen)

        # Prompted frames: tracked backward from the first one (frames before it), then forward.
        prompted = [f for f, objects in frames.items() if objects] + ([0] if first_masks else [])
        before: dict[int, Segmentation] = {}
        produced = 0
        if prompted:
            start = min(prompted)
            for frame_idx, obj_ids, logits, direction in propagate_both_ways(
                    vp, state, start, directions=(BACKWARD, FORWARD)):
                if direction == BACKWARD:
                    if frame_idx < start:
                        before[frame_idx] = result(obj_ids, logits)
                    continue
                for gap in range(produced, frame_idx):  # frames before start, undecodable ones
                    yield gap, before.get(gap) or empty()
                yield frame_idx, result(obj_ids, logits)
                produced = frame_idx + 1
        for gap in range(produced, num_frames):
            yield gap, before.get(gap) or empty()
        vp.reset_state(state)

    def track_everything(self, d: Decoded) -> Iterator[tuple[int, Segmentation]]:
        """(frame index, result) for every frame: segment everything every `track_every` frames,
        new objects added, duplicates merged, vanished ones dropped (VideoAutoTracker). Ids are
        never reused, so PNGs are 16-bit; unreadable frames come out empty."""
        from segapp.video.auto_tracker import VideoAutoTracker

        tracker = VideoAutoTracker(self.video_predictor, generator=self.amg, every=self.options.track_every)
        hw = d.image.shape[:2]
        produced = 0
        try:
            for frame_idx, obj_ids, logits in tracker.track(str(d.item.path)):
                for gap in range(produced, frame_idx):
                    yield gap, Segmentation(np.zeros(hw, np.uint16), sixteen_bit=True)
                ids = [int(i) for i in obj_ids]
                masks = _to_numpy(logits)[:, 0] > 0.0
                yield frame_idx, Segmentation(instance_id_map(masks, hw, ids), [
                    {"instance_id": i, "score": 1.0, "category_id": 1} for i in ids], sixteen_bit=True)
                produced = frame_idx + 1
        finally:
            tracker.close()
        for gap in range(produced, d.num_frames):
            yield gap, Segmentation(np.zeros(hw, np.uint16), sixteen_bit=True)


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().float().cpu().numpy()
    return np.asarray(x)


# ---------------------------------------------------------------------------- the writing side
class InputWriter:
    """Writes one input's outputs as its results arrive, then its record (which marks it done)."""

    def __init__(self, d: Decoded, state: RunState, formats: tuple[str, ...], prompts: Prompts | None) -> None:
        self.d = d
        self.item = d.item
        self.state = state
        self.formats = formats
        self.prompts = prompts
        self.outputs: list[str] = []
        self.coco: list[dict[str, Any]] = []
        self.coco_images: list[dict[str, Any]] = []
        self.error: str | None = None
        self.status = "ok"
        self.masks = 0  # non-empty object masks written (for a video, summed over its frames)
        self.seconds = d.seconds
        self._video: Mp4Writer | None = None
        self._frames = None  # OpenCV capture re-reading the video for overlays
        self.tracks = None  # a video's MOT / MOTS / YouTube-VIS outputs, written by finish
        if self.item.kind == "video" and any(f in formats for f in VIDEO_FORMATS):
            from segapp.batch.tracks import TrackOutputs

            self.tracks = TrackOutputs(formats)

    def _put(self, rel: str, data: bytes) -> None:
        atomic_write(self.state.out / rel, data)
        self.outputs.append(rel)

    def _image_id(self, frame: int | None) -> int:
        if frame is None and self.prompts is not None and self.prompts.source == "coco":
            known = self.prompts.image_id(self.item.rel)
            if known is not None:
                return int(known)
        return image_id(self.item.rel, frame)

    def add(self, seg: Segmentation, frame: int | None = None, rgb: np.ndarray | None = None) -> None:
        """Write the result of the image (frame None) or of video frame `frame`."""
        if self.error is not None:
            return
        try:
            self._add(seg, frame, rgb)
        except Exception as err:  # noqa: BLE001 - reported in this input's record
            if stops_run(err):  # disk full or read-only: every input would fail; the run stops
                self.discard()
                raise
            self.fail(f"writing outputs failed: {type(err).__name__}: {err}")

    def _add(self, seg: Segmentation, frame: int | None, rgb: np.ndarray | None) -> None:
        h, w = seg.id_map.shape
        self.masks += int(np.count_nonzero(np.unique(seg.id_map)))  # the ids present, less 0
        stem = self.item.stem if frame is None else f"{self.item.stem}/{frame:06d}"
        if "png" in self.formats:
            self._put(f"{stem}.png", encode_id_png(seg.id_map, seg.sixteen_bit))
        objects = object_masks(seg) if ("coco" in self.formats or self.tracks is not None) else None
        if self.tracks is not None and frame is not None:
            self.tracks.add(frame, (h, w), objects)
        if "coco" in self.formats:
            iid = self._image_id(frame)
            entry = {"id": iid, "file_name": self.item.rel, "height": h, "width": w}
            extra = None
            if frame is not None:
                entry["frame_index"] = frame
                extra = {"frame_index": frame}
            self.coco_images.append(entry)
            self.coco += coco_annotations(seg, iid, extra, objects)
        if "overlay" in self.formats:
            if frame is None:
                self._put(f"{stem}.overlay.jpg", encode_jpeg(overlay(self.d.image, seg.id_map)))
            else:
                self._video_frame(seg, frame)

    def _video_frame(self, seg: Segmentation, frame: int) -> None:
        import cv2

        if self._video is None:
            self._video = Mp4Writer(self.state.out / f"{self.item.stem}.overlay.mp4", self.d.fps)
            self._frames = cv2.VideoCapture(str(self.item.path))
        ok, bgr = self._frames.read()
        rgb = bgr[..., ::-1] if ok else np.zeros((*seg.id_map.shape, 3), np.uint8)
        if rgb.shape[:2] != seg.id_map.shape:
            raise ValueError(f"frame {frame} is {rgb.shape[1]}x{rgb.shape[0]}, masks are "
                             f"{seg.id_map.shape[1]}x{seg.id_map.shape[0]}")
        self._video.write(overlay(np.ascontiguousarray(rgb), seg.id_map))

    def discard(self) -> None:
        """Delete the outputs written so far (the input is unfinished: a rerun redoes it);
        on a full disk this makes room for the manifest."""
        self._close_video(abort=True)
        for rel in self.outputs:
            (self.state.out / rel).unlink(missing_ok=True)
        self.outputs = []

    def fail(self, error: str) -> None:
        self.status, self.error = "failed", error
        self._close_video(abort=True)

    def skip(self, reason: str) -> None:
        self.status, self.error = "skipped", reason

    def _close_video(self, abort: bool = False) -> None:
        if self._frames is not None:
            self._frames.release()
            self._frames = None
        if self._video is not None:
            try:
                if abort:
                    self._video.abort()
                else:
                    self._video.close()
                    self.outputs.append(f"{self.item.stem}.overlay.mp4")
            finally:
                self._video = None

    def finish(self, extra_seconds: float = 0.0) -> dict[str, Any]:
        """Close the input: write a video's tracking outputs, save its COCO (and YouTube-VIS)
        fragment and its record; returns the record."""
        if self.status == "ok":
            try:
                self._close_video()
            except Exception as err:  # noqa: BLE001
                self.fail(f"writing the overlay video failed: {type(err).__name__}: {err}")
        ytvis = None
        if self.status == "ok" and self.tracks is not None:
            try:
                ytvis = self._write_tracks()
            except Exception as err:  # noqa: BLE001 - reported in this input's record
                if stops_run(err):
                    self.discard()
                    raise
                self.fail(f"writing the tracking outputs failed: {type(err).__name__}: {err}")
        self.seconds += extra_seconds
        record = {
            "input": self.item.rel, "kind": self.item.kind,
            "outputs": self.outputs if self.status == "ok" else [],
            "status": self.status, "seconds": round(self.seconds, 3), "error": self.error,
            "masks": self.masks if self.status == "ok" else None,
            "formats": list(self.formats),
            "coco_images": self.coco_images if self.status == "ok" else [],
        }
        coco = self.coco if (self.status == "ok" and "coco" in self.formats) else None
        self.state.save(self.item, record, coco, ytvis)
        return record

    def _write_tracks(self) -> dict[str, Any] | None:
        """Write the video's MOT and MOTS files; returns its YouTube-VIS fragment (or None)."""
        from segapp.batch.tracks import MOT_SUFFIX, MOTS_SUFFIX

        if "mot" in self.formats:
            self._put(f"{self.item.stem}{MOT_SUFFIX}", self.tracks.mot_text())
        if "mots" in self.formats:
            self._put(f"{self.item.stem}{MOTS_SUFFIX}", self.tracks.mots_text())
        if "ytvis" in self.formats:
            return self.tracks.ytvis(image_id(self.item.rel), self.item.rel)
        return None


def run_chunk(segmenter: Segmenter, decoded: list[Decoded], state: RunState,
              emit: Callable[[Callable[[], Any]], None]) -> None:
    """The model's part of one chunk. Every write is handed to `emit` as a callable (the
    local engine queues them for its writer thread; the Ray engine runs them in place);
    the callable that finishes an input returns its record."""
    fmt = segmenter.options.formats
    prompts = segmenter.prompts
    writers = {id(d): InputWriter(d, state, fmt, prompts) for d in decoded}
    images = [d for d in decoded if d.error is None and d.item.kind == "image"]
    if images:
        start = time.perf_counter()
        results = segmenter.segment_images(images)
        share = (time.perf_counter() - start) / len(images)
        for d, res in zip(images, results):
            if not d.write:
                continue
            w = writers[id(d)]
            if isinstance(res, LookupError):
                emit(_then_finish(w, w.skip, str(res), share))
            elif isinstance(res, Exception):
                emit(_then_finish(w, w.fail, _describe(res), share))
            else:
                emit(_then_finish(w, w.add, res, share))
    for d in decoded:
        if not d.write:
            continue
        w = writers[id(d)]
        if d.error is not None:
            emit(_then_finish(w, w.fail, d.error, 0.0))
        elif d.item.kind == "video":
            start = time.perf_counter()
            try:
                for frame, seg in segmenter.segment_video(d):
                    emit(partial(w.add, seg, frame))
            except LookupError as err:
                emit(partial(w.skip, str(err)))
            except Exception as err:  # noqa: BLE001 - reported per input
                logger.debug("video %s failed", d.item.rel, exc_info=True)
                emit(partial(w.fail, _describe(err)))
            took = time.perf_counter() - start
            emit(partial(w.finish, took))


def _then_finish(w: InputWriter, action: Callable[[Any], Any], arg: Any, seconds: float) -> Callable[[], dict]:
    """A write task: `action(arg)` on the input's writer, then finish the input."""
    def task() -> dict:
        action(arg)
        return w.finish(seconds)
    return task


def _describe(err: Exception) -> str:
    text = str(err) or type(err).__name__
    return text if isinstance(err, (ValueError, RuntimeError)) else f"{type(err).__name__}: {text}"


def prepare_chunk(chunk: list[Input], state: RunState, formats: tuple[str, ...], resume: bool,
                  stored_pixels: bool = False) -> list[Decoded] | None:
    """Decode a chunk, or None when every input in it is already complete. stored_pixels:
    images as stored, EXIF orientation not applied (`Prompts.stored_pixels`)."""
    todo = [not (resume and state.is_complete(item, formats)) for item in chunk]
    if not any(todo):
        return None
    decoded = []
    for item, needed in zip(chunk, todo):
        if needed or item.kind == "image":  # complete images still join the encoder batch
            d = decode(item, stored_pixels)
            d.write = needed
            decoded.append(d)
    return decoded


# ---------------------------------------------------------------------------- local engine
@dataclass
class RunSummary:
    records: list[dict[str, Any]] = field(default_factory=list)
    already_done: int = 0
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(1 for r in self.records if r.get("status") == status)


def run_local(items: list[Input], spec: ModelSpec, options: Options, prompts: Prompts | None,
              out: Path) -> RunSummary:
    """Segment `items` on this machine; outputs go under `out`. Returns the run's records."""
    from tqdm import tqdm

    state = RunState(out)
    started = time.perf_counter()
    groups = chunks(items, options.batch_size)
    done_before = sum(1 for item in items if options.resume and state.is_complete(item, options.formats))
    segmenter = Segmenter(spec, options, prompts)

    to_model: queue.Queue = queue.Queue(maxsize=QUEUE_CHUNKS)
    to_writer: queue.Queue = queue.Queue(maxsize=QUEUE_WRITES)
    stop = threading.Event()
    failures: list[BaseException] = []
    bar = tqdm(total=len(items), initial=done_before, unit="input", disable=not options.progress,
               dynamic_ncols=True, desc="segment")

    def reader() -> None:
        try:
            for chunk in groups:
                if stop.is_set():
                    return
                decoded = prepare_chunk(chunk, state, options.formats, options.resume,
                                        stored_pixels=prompts is not None and prompts.stored_pixels)
                if decoded is not None:
                    to_model.put(decoded)
        except BaseException as err:  # noqa: BLE001 - re-raised on the main thread
            failures.append(err)
        finally:
            to_model.put(None)

    def writer() -> None:
        while True:
            task = to_writer.get()
            if task is None:
                return
            if failures:  # stopping: drain the queue, write nothing more
                continue
            try:
                result = task()
            except BaseException as err:  # noqa: BLE001 - re-raised on the main thread
                failures.append(err)
                stop.set()
                continue
            if isinstance(result, dict):
                bar.update(1)

    threads = [threading.Thread(target=reader, name="segment-reader", daemon=True),
               threading.Thread(target=writer, name="segment-writer", daemon=True)]
    for t in threads:
        t.start()
    try:
        while not stop.is_set():
            decoded = to_model.get()
            if decoded is None:
                break
            run_chunk(segmenter, decoded, state, to_writer.put)
    finally:
        stop.set()
        to_writer.put(None)
        threads[1].join()
        while threads[0].is_alive():  # unblock a reader waiting on a full queue
            try:
                to_model.get_nowait()
            except queue.Empty:
                threads[0].join(timeout=0.1)
        bar.close()
    categories = prompts.categories if prompts is not None else [{"id": 1, "name": "object"}]
    if failures:
        if stops_run(failures[0]):
            raise state.stopped(failures[0], items, options.formats, categories) from failures[0]
        raise failures[0]
    try:
        records = state.finalise(items, options.formats, categories)
    except OSError as err:
        if stops_run(err):
            raise state.stopped(err, items, options.formats, categories) from err
        raise
    return RunSummary(records, done_before, time.perf_counter() - started)


__all__ = ["ModelSpec", "Options", "Segmenter", "RunSummary", "run_local", "run_chunk", "prepare_chunk",
           "chunks", "decode", "build_model"]
