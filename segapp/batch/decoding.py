"""The reading stage of `segapp segment`: one input decoded (an image's pixels, a video's probe).

A video is probed here (its first frame, frame rate and frame count, so that an unreadable
file fails before the model is involved); its frames are decoded once, later, by the
segmenter's frame source, which also hands them to the writer for the overlay video.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segapp.batch.inputs import Input
from segapp.formats.images import read_image


@dataclass
class Decoded:
    """One input, decoded. image: [H, W, 3] uint8 RGB (a video's first frame); for videos, fps
    and num_frames from a probe."""

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
    """`item` decoded; an unreadable input gets its error, never raises. stored_pixels: images
    as stored, EXIF orientation not applied (`Prompts.stored_pixels`)."""
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


__all__ = ["Decoded", "probe_video", "decode"]
