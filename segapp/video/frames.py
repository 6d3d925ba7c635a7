"""Lazy video frame sources: a video file, a folder of images, or a list of arrays.

Nothing is decoded up front: `init_state` reads one frame to learn the video size and every
other frame is decoded when tracking reaches it. A video file is decoded by a background
thread that reads a few frames ahead of the last request, so decoding overlaps with tracking;
a request far from the decoder's position seeks. Frames that cannot be decoded are recorded in
`skipped` (and logged) and the caller tracks through the readable ones.
"""
from __future__ import annotations

import logging
import os
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np

from segapp.formats.media import FRAME_SUFFIXES, VIDEO_SUFFIXES
from segapp.transforms import to_rgb_uint8

logger = logging.getLogger(__name__)

# A video whose decoding fails on this many consecutive frames is taken as truncated.
TRUNCATION_RUN = 8
# The decoder thread ends after this many idle seconds (and restarts on the next request), so
# that an abandoned session's video can be garbage collected.
DECODER_IDLE_EXIT_S = 10.0


class VideoReadError(RuntimeError):
    """The video cannot be read as a whole (unreadable, empty, truncated, inconsistent)."""


def natural_key(name: str) -> list:
    """Sort key treating digit runs as numbers: frame2 < frame10, and "00012" as 12."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


class FrameSource:
    """Random access to the frames of one video as [H, W, 3] uint8 RGB arrays.

    `get(i)` returns the frame, or None when frame i cannot be decoded (it is then listed in
    `skipped`). All frames have the size of the first one; a frame of another size raises.
    """

    num_frames: int
    height: int
    width: int

    def __init__(self) -> None:
        self._skipped: set[int] = set()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self.num_frames

    @property
    def skipped(self) -> list[int]:
        """Indices of frames found unreadable so far, ascending."""
        with self._lock:
            return sorted(self._skipped)

    def _mark_skipped(self, index: int, why: str) -> None:
        with self._lock:
            new = index not in self._skipped
            self._skipped.add(index)
        if new:
            logger.warning("skipping frame %d: %s", index, why)

    def _check_size(self, frame: np.ndarray, index: int, where: str) -> np.ndarray:
        if frame.shape[:2] != (self.height, self.width):
            raise VideoReadError(
                f"frame {index} ({where}) is {frame.shape[1]}x{frame.shape[0]} but the video is "
                f"{self.width}x{self.height} (from frame 0); all frames must have one size"
            )
        return frame

    def _check_index(self, index: int) -> int:
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
            raise TypeError(f"frame index must be an int, got {type(index).__name__}")
        if not 0 <= index < self.num_frames:
            raise IndexError(f"frame index {index} is outside the video (frames 0..{self.num_frames - 1})")
        return int(index)

    def get(self, index: int) -> np.ndarray | None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class ArrayFrames(FrameSource):
    """Frames given as a list of arrays (any form `to_rgb_uint8` accepts), checked at once."""

    def __init__(self, frames: Sequence) -> None:
        super().__init__()
        if len(frames) == 0:
            raise VideoReadError("the video has zero frames (empty list)")
        self._frames = list(frames)
        self.num_frames = len(self._frames)
        first = to_rgb_uint8(self._frames[0])
        self.height, self.width = first.shape[:2]
        for i, frame in enumerate(self._frames):
            shape = getattr(frame, "shape", None)
            if shape is None or tuple(shape[:2]) != (self.height, self.width):
                raise VideoReadError(
                    f"frame {i} has shape {shape} but frame 0 is {self.height}x{self.width}; "
                    "all frames must have one size"
                )

    def get(self, index: int) -> np.ndarray:
        return to_rgb_uint8(self._frames[self._check_index(index)])


class FolderFrames(FrameSource):
    """A folder of JPEG or PNG frames, in natural order of their names."""

    def __init__(self, folder: str | Path) -> None:
        super().__init__()
        self.folder = Path(folder)
        names = [n for n in os.listdir(self.folder) if n.lower().endswith(FRAME_SUFFIXES)]
        if not names:
            raise VideoReadError(f"the video has zero frames: no JPEG or PNG files in {self.folder}")
        self.paths = [self.folder / n for n in sorted(names, key=natural_key)]
        self.num_frames = len(self.paths)
        first = None
        for i, path in enumerate(self.paths):
            first = self._read(i)
            if first is not None:
                break
        if first is None:
            raise VideoReadError(f"no frame in {self.folder} could be decoded")
        self.height, self.width = first.shape[:2]
        self._check_headers()

    def _check_headers(self) -> None:
        """Compare every frame's size from its header (no pixel decoding), so a folder of
        mixed sizes fails at once rather than midway through tracking."""
        from PIL import Image

        for i, path in enumerate(self.paths):
            try:
                with Image.open(path) as image:
                    width, height = image.size
            except (OSError, SyntaxError, ValueError) as err:
                self._mark_skipped(i, f"{path.name} cannot be opened ({err})")
                continue
            if (height, width) != (self.height, self.width):
                raise VideoReadError(
                    f"frames of different sizes in {self.folder}: {path.name} is {width}x{height}, "
                    f"the first frame is {self.width}x{self.height}"
                )

    def _read(self, index: int) -> np.ndarray | None:
        from PIL import Image

        path = self.paths[index]
        try:
            with Image.open(path) as image:
                return np.asarray(image.convert("RGB"))
        except (OSError, SyntaxError, ValueError) as err:
            self._mark_skipped(index, f"{path.name} cannot be decoded ({err})")
            return None

    def get(self, index: int) -> np.ndarray | None:
        index = self._check_index(index)
        frame = self._read(index)
        return None if frame is None else self._check_size(frame, index, self.paths[index].name)


class VideoFileFrames(FrameSource):
    """A video file decoded with OpenCV by a read-ahead thread.

    The thread decodes sequentially from its position up to `read_ahead` frames past the latest
    request and keeps the last `cache_size` decoded frames. A request behind the cache or far
    ahead moves the decoder (seek); when requests walk backwards (reverse tracking), it seeks a
    whole chunk back so that one seek serves `read_ahead` requests.
    """

    def __init__(self, path: str | Path, read_ahead: int = 8, cache_size: int = 24) -> None:
        super().__init__()
        import cv2

        self.path = Path(path)
        if not self.path.is_file():
            raise VideoReadError(f"video file not found: {self.path}")
        self._cv2 = cv2
        self._cap = cv2.VideoCapture(str(self.path))
        if not self._cap.isOpened():
            raise VideoReadError(f"cannot open video {self.path} (unreadable or unsupported format)")
        self.num_frames = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if self.num_frames <= 0:
            self._cap.release()
            raise VideoReadError(f"the video {self.path} has zero frames")
        ok, frame = self._cap.read()
        if not ok or frame is None:
            self._cap.release()
            raise VideoReadError(f"cannot decode the first frame of {self.path} (unreadable or truncated video)")
        self.height, self.width = frame.shape[:2]
        self.read_ahead = max(1, read_ahead)
        self.cache_size = max(cache_size, 2 * self.read_ahead)
        self._cond = threading.Condition()
        # One request at a time: the decoder serves a single position (`_wanted`, `_seek_to`),
        # so two readers (the tracker's prefetch thread and the one tracking, or an overlay
        # writer) waiting at once could overwrite each other's request and wait forever.
        self._one_reader = threading.Lock()
        self._cache: OrderedDict[int, np.ndarray | None] = OrderedDict({0: self._to_rgb(frame)})
        self._next = 1  # the index the decoder reads next
        self._wanted = 0
        self._seek_to: int | None = None
        self._fail_run = 0
        self._error: BaseException | None = None
        self._closed = False
        self._thread: threading.Thread | None = None

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._decode_loop, name="segapp-video-decode", daemon=True)
            self._thread.start()

    def _to_rgb(self, frame: np.ndarray) -> np.ndarray:
        return self._cv2.cvtColor(frame, self._cv2.COLOR_BGR2RGB)

    def _decode_loop(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._closed and self._idle():
                        # A request made while the wait timed out finds this thread alive and
                        # only notifies: look again before leaving, or it would be lost.
                        if not self._cond.wait(timeout=DECODER_IDLE_EXIT_S) and self._idle():
                            self._thread = None
                            return
                    if self._closed:
                        return
                    if self._seek_to is not None:
                        target, self._seek_to = self._seek_to, None
                        self._cap.set(self._cv2.CAP_PROP_POS_FRAMES, target)
                        self._next, self._fail_run = target, 0
                    index = self._next
                ok, frame = self._cap.read()
                with self._cond:
                    if self._seek_to is not None:
                        continue  # a seek was requested meanwhile; this frame may be stale
                    if ok and frame is not None and frame.shape[:2] != (self.height, self.width):
                        raise VideoReadError(
                            f"frame {index} of {self.path} is {frame.shape[1]}x{frame.shape[0]}, "
                            f"the video is {self.width}x{self.height}"
                        )
                    self._cache[index] = self._to_rgb(frame) if ok and frame is not None else None
                    self._cache.move_to_end(index)
                    while len(self._cache) > self.cache_size:
                        self._cache.popitem(last=False)
                    self._fail_run = 0 if ok else self._fail_run + 1
                    if self._fail_run >= TRUNCATION_RUN:
                        raise VideoReadError(
                            f"{self.path} appears truncated: no frame could be decoded from frame "
                            f"{index - TRUNCATION_RUN + 1} on, though it announces {self.num_frames} frames"
                        )
                    self._next = index + 1
                    if not ok:
                        # A failed read leaves the decoder where it was; step over the frame.
                        self._cap.set(self._cv2.CAP_PROP_POS_FRAMES, index + 1)
                    self._cond.notify_all()
        except BaseException as err:  # handed to the requesting thread, not swallowed
            with self._cond:
                self._error = err
                self._cond.notify_all()

    def _idle(self) -> bool:
        """Nothing to decode: no seek asked for, and the end reached or read_ahead past `_wanted`."""
        return self._seek_to is None and (
            self._next >= self.num_frames or self._next > self._wanted + self.read_ahead)

    def get(self, index: int) -> np.ndarray | None:
        index = self._check_index(index)
        with self._one_reader, self._cond:
            backwards = index < self._wanted
            self._wanted = index
            if index not in self._cache:
                ahead = self._next <= index <= self._next + self.read_ahead
                if not ahead:
                    self._seek_to = max(0, index - self.read_ahead + 1) if backwards else index
                    self._wanted = max(index, self._seek_to)
            self._ensure_thread()
            self._cond.notify_all()
            while index not in self._cache:
                if self._error is not None:
                    raise VideoReadError(f"decoding {self.path} failed: {self._error}") from self._error
                self._cond.wait()
            self._wanted = index
            self._cond.notify_all()
            frame = self._cache[index]
            self._cache.move_to_end(index)
        if frame is None:
            self._mark_skipped(index, f"frame {index} of {self.path.name} cannot be decoded")
        return frame

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=5)
        self._cap.release()

    def __del__(self) -> None:
        cap = getattr(self, "_cap", None)
        if cap is not None:
            cap.release()


def open_frames(video) -> FrameSource:
    """A video file path, a folder of frames, or a list of [H, W, 3] uint8 frames -> FrameSource."""
    if isinstance(video, FrameSource):
        return video
    if isinstance(video, (str, os.PathLike)):
        path = Path(video)
        if path.is_dir():
            return FolderFrames(path)
        if not path.exists():
            raise VideoReadError(f"video not found: {path}")
        if path.suffix.lower() not in VIDEO_SUFFIXES:
            raise VideoReadError(
                f"unsupported video {path}: expected a folder of JPEG/PNG frames or a video file "
                f"({', '.join(VIDEO_SUFFIXES)})"
            )
        return VideoFileFrames(path)
    if isinstance(video, np.ndarray) and video.ndim == 4:
        video = list(video)
    if isinstance(video, (list, tuple)):
        return ArrayFrames(video)
    raise TypeError(
        f"unsupported video type {type(video).__name__}: pass a video file path, a folder of frames, "
        "or a list of [H, W, 3] uint8 arrays"
    )
