"""`segapp segment --stream SOURCE`: segment a live stream frame by frame, as segment does a video.

SOURCE is a camera index (0, 1, ...), an RTSP/HTTP(S) URL, or a file that may still be growing
(read through OpenCV's VideoCapture). Objects come from segment everything on the first frame
(or, with --track-everything, every K frames: segapp.video.auto_tracker) and are tracked on
constant memory (segapp.video.stream). A reader thread decodes and resizes the next frames
while the model tracks. Outputs under --out, as for a video input named NAME (`stream_name`):

    NAME/000000.png ...     instance ids of each frame (16-bit)
    NAME.overlay.mp4        with --format ...,overlay
    coco_results.json, coco_images.json, manifest.jsonl   as segment writes them

The stream ends when the source ends (a file that has not grown for --stream-idle-timeout
seconds, a camera or URL that gives no frame for as long), after --max-frames frames, or on
Ctrl-C; the outputs of every frame segmented so far are kept.
"""
from __future__ import annotations

import logging
import queue
import re
import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from segapp.batch.writer import InputWriter

logger = logging.getLogger(__name__)

# Seconds between reads when the source has no new frame yet (a growing file, a slow camera).
POLL_S = 0.05
# Frames decoded ahead of the model.
READ_AHEAD = 4
URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")


class StreamError(RuntimeError):
    """The stream source cannot be opened or read; the message names it."""


def parse_source(source: str) -> int | str:
    """A camera index (int), a URL, or a file path (str); StreamError for anything else."""
    text = str(source).strip()
    if not text:
        raise StreamError("--stream needs a source: a camera index (0), an rtsp:// or http(s):// URL, or a file")
    if text.isdigit():
        return int(text)
    if text.lower().startswith(URL_SCHEMES):
        return text
    if "://" in text:
        raise StreamError(f"--stream {text}: unsupported URL scheme; use one of "
                          f"{', '.join(s[:-3] for s in URL_SCHEMES)}, a camera index or a file")
    if not Path(text).is_file():
        raise StreamError(f"--stream {text}: no such file, and not a camera index or a URL")
    return text


def stream_name(source: int | str) -> str:
    """Output name of a stream: camera0, the file's stem, or the URL's host and path made safe."""
    if isinstance(source, int):
        return f"camera{source}"
    if "://" not in source:
        return Path(source).stem or "stream"
    rest = source.split("://", 1)[1].split("?", 1)[0]
    rest = rest.rsplit("@", 1)[-1]  # never a user name or password in a file name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", rest).strip("_.") or "stream"


class FrameReader:
    """RGB frames of a stream source, read by OpenCV; a file is re-read as it grows.

    Iterating yields [H, W, 3] uint8 frames until the source ends: no new frame for
    `idle_timeout` seconds (or, for a finished file, at once when idle_timeout is 0).
    """

    def __init__(self, source: int | str, idle_timeout: float = 2.0) -> None:
        import cv2

        self.source = source
        self.idle_timeout = idle_timeout
        self.is_file = isinstance(source, str) and "://" not in source
        self._cv2 = cv2
        self._cap = cv2.VideoCapture(source)
        if not self._cap.isOpened():
            self._cap.release()
            kind = "camera" if isinstance(source, int) else "file" if self.is_file else "URL"
            raise StreamError(f"cannot open the stream {source!r} ({kind}): OpenCV could not open it "
                              "(no such camera, unreachable URL, or not a video)")
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0 < fps < 1000 else 25.0
        self.count = 0

    def _reopen_at(self, index: int) -> None:
        """A growing file: open it again (its new end is then known) and seek to `index`."""
        self._cap.release()
        self._cap = self._cv2.VideoCapture(self.source)
        if self._cap.isOpened() and index:
            self._cap.set(self._cv2.CAP_PROP_POS_FRAMES, index)

    def __iter__(self) -> Iterator[np.ndarray]:
        idle_since = None
        while True:
            ok, frame = self._cap.read()
            if ok and frame is not None:
                idle_since = None
                self.count += 1
                yield np.ascontiguousarray(frame[..., ::-1])
                continue
            now = time.monotonic()
            idle_since = idle_since or now
            if now - idle_since >= self.idle_timeout:
                if self.count == 0:
                    raise StreamError(f"the stream {self.source!r} gave no frame in {self.idle_timeout:g} s")
                return
            time.sleep(POLL_S)
            if self.is_file:
                self._reopen_at(self.count)

    def close(self) -> None:
        self._cap.release()


def read_ahead(reader: FrameReader, prepare, max_frames: int | None, stop: threading.Event):
    """(frame, prepared) pairs from a thread that reads and prepares frames ahead of the model."""
    q: queue.Queue = queue.Queue(maxsize=READ_AHEAD)
    done = object()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for n, frame in enumerate(reader):
                if stop.is_set() or (max_frames is not None and n >= max_frames):
                    break
                item = (frame, prepare(frame) if prepare is not None else None)
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as err:  # noqa: BLE001 - raised again in the consuming thread
            errors.append(err)
        finally:
            q.put(done)

    thread = threading.Thread(target=work, name="segapp-stream-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                if errors:
                    raise errors[0]
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.1)


def run_stream(source: str, spec, options, out: Path, max_frames: int | None = None,
               idle_timeout: float = 2.0, track_every: int | None = None) -> dict:
    """Segment the stream `source` into `out`; returns the manifest record with "frames": the
    frames segmented (whatever the formats written). track_every: with
    a number K, segment everything every K frames (VideoAutoTracker), else on the first frame."""
    from segapp.batch.inputs import Input
    from segapp.batch.outputs import RunState, Segmentation
    from segapp.formats.id_maps import instance_id_map
    from segapp.batch.decoding import Decoded
    from segapp.batch.segmenter import Segmenter

    parsed = parse_source(source)
    reader = FrameReader(parsed, idle_timeout=idle_timeout)
    name = stream_name(parsed)
    item = Input(path=Path(parsed) if reader.is_file else Path(name), rel=name, kind="video", stem=name)
    state = RunState(out)
    state.start({"stream": str(source)}, resume=False)
    segmenter = Segmenter(spec, options, None)
    vp = segmenter.video_predictor  # a model that cannot track (images only) fails here
    decoded = Decoded(item, fps=reader.fps)
    writer = _StreamWriter(decoded, state, options.formats, None)
    stop = threading.Event()
    started = time.perf_counter()
    frames = read_ahead(reader, vp.prepare_frame if track_every is None else None, max_frames, stop)
    try:
        if track_every is not None:
            from segapp.video.auto_tracker import VideoAutoTracker

            tracker = VideoAutoTracker(vp, generator=segmenter.amg, every=track_every)
            results = ((t, ids, logits, frame) for (t, ids, logits), frame
                       in _with_frames(tracker.track(_firsts(frames, decoded)), decoded))
        else:
            results = _track_first_frame_objects(segmenter, vp, frames, decoded)
        for frame_idx, obj_ids, logits, rgb in results:
            masks = (logits[:, 0] > 0).cpu().numpy()
            ids = [int(i) for i in obj_ids]
            seg = Segmentation(instance_id_map(masks, rgb.shape[:2], ids), [
                {"instance_id": i, "score": 1.0, "category_id": 1} for i in ids], sixteen_bit=True)
            writer.add(seg, frame_idx, rgb)
    except KeyboardInterrupt:
        logger.warning("stream interrupted after %d frames; writing what was segmented", reader.count)
    except StreamError:
        writer.discard()
        raise
    finally:
        stop.set()
        reader.close()
    record = writer.finish(time.perf_counter() - started)
    state.finalise([item], options.formats, [{"id": 1, "name": "object"}])
    return {**record, "frames": writer.frames}


def _firsts(frames, decoded) -> Iterator[np.ndarray]:
    """Frames of (frame, prepared) pairs, keeping each in `decoded.image` for the writer."""
    for frame, _ in frames:
        decoded.image = frame
        yield frame


def _with_frames(results, decoded):
    for result in results:
        yield result, decoded.image


def _track_first_frame_objects(segmenter, vp, frames, decoded):
    """Segment everything on the first frame, then track those objects (as segment does a video)."""
    from segapp.video.stream import StreamTracker

    tracker = StreamTracker(vp)
    try:
        for n, (frame, prepared) in enumerate(frames):
            decoded.image = frame
            if n == 0:
                first = segmenter.segment_everything(frame)
                prompts = {o["instance_id"]: {"mask": first.id_map == o["instance_id"]} for o in first.objects}
                t, ids, logits = tracker.start(frame, prompts)
            else:
                t, ids, logits = tracker.step(frame, prepared)
            yield t, ids, logits, frame
    finally:
        tracker.close()


class _StreamWriter(InputWriter):
    """segment's per-input writer (overlays drawn on the frames given to `add`, as for a video),
    counting the frames written."""

    frames = 0  # frames written

    def _add(self, seg, frame, rgb) -> None:
        super()._add(seg, frame, rgb)
        self.frames += 1


__all__ = ["StreamError", "FrameReader", "parse_source", "stream_name", "run_stream"]
