"""MP4 video writing: H.264 (yuv420p, plays in browsers) with PyAV, written atomically.

One encoder setting for every MP4 segapp writes (the demo's overlay download and
`segapp segment`'s overlay videos): libx264, CRF 23, preset veryfast, one encoder thread (so
the same frames give the same bytes on every run). Odd sides are padded by one pixel (yuv420p
needs even sides). Without PyAV (an optional dependency), OpenCV's mp4v is written instead,
which desktop players but no browser can play (a log line says so).
"""
from __future__ import annotations

import logging
import os
from fractions import Fraction
from pathlib import Path
from typing import Iterable

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_FPS = 25.0
X264_OPTIONS = {"crf": "23", "preset": "veryfast", "threads": "1"}
# Frame rates are written as fractions with denominators up to this (30000/1001 stays exact).
MAX_RATE_DENOMINATOR = 1001
TMP_SUFFIX = ".segapp-tmp"


class Mp4Writer:
    """Writes [H, W, 3] uint8 RGB frames to `path` (under a temporary name in its folder,
    renamed into place by `close`; `abort` deletes it). A writer given no frames writes nothing."""

    def __init__(self, path: str | os.PathLike, fps: float, tmp_suffix: str = TMP_SUFFIX) -> None:
        self.path = Path(path)
        self.fps = fps if fps and fps > 0 else DEFAULT_FPS
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}{tmp_suffix}")
        self.frames = 0
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
            self._av = av
            self._container = av.open(str(self.tmp), mode="w", format="mp4")
            self._stream = self._container.add_stream(
                "libx264", rate=Fraction(self.fps).limit_denominator(MAX_RATE_DENOMINATOR))
            self._stream.width, self._stream.height = w + w % 2, h + h % 2
            self._stream.pix_fmt = "yuv420p"
            self._stream.codec_context.options = dict(X264_OPTIONS)
        else:
            import cv2

            logger.info("PyAV is not installed: writing %s as mp4v (not playable in browsers; "
                        "`pip install av` for H.264)", self.path.name)
            self._cv = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))

    def write(self, rgb: np.ndarray) -> None:
        rgb = np.asarray(rgb, dtype=np.uint8)
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
        self.frames += 1

    def close(self) -> None:
        """Flush and rename into place (a writer given no frames writes nothing)."""
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
        """Stop and delete the temporary file; `path` is left as it was."""
        try:
            if self._container is not None:
                self._container.close()
            if self._cv is not None:
                self._cv.release()
        finally:
            self.tmp.unlink(missing_ok=True)


def write_mp4(frames: Iterable[np.ndarray], path: str | os.PathLike, fps: float) -> Path:
    """Write [H, W, 3] uint8 RGB frames to an MP4 at `path` (see Mp4Writer); ValueError if none."""
    writer = Mp4Writer(path, fps)
    try:
        for frame in frames:
            writer.write(frame)
    except BaseException:
        writer.abort()
        raise
    if not writer.frames:
        raise ValueError("no frames to write")
    writer.close()
    return writer.path
