"""The media extension table: which files are images and which are videos.

One table for every entry point (`segapp segment`, the demo's uploads, the video predictor,
the evaluators and the trainers), so that a file one of them accepts is accepted by all.
Extensions are lower case with the dot; compare them with `Path.suffix.lower()`.
"""
from __future__ import annotations

import os
from pathlib import Path

# Still images read with PIL/OpenCV.
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# Video files decoded with PyAV or OpenCV (FFmpeg demuxers).
VIDEO_SUFFIXES: tuple[str, ...] = (".mp4", ".mov", ".avi", ".mkv", ".m4v", ".webm")
# The frames of a video given as a folder (as SAM 2's loader reads them): JPEG and PNG only.
FRAME_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png")


def is_image(path: str | os.PathLike) -> bool:
    """Whether `path` has an image extension (IMAGE_SUFFIXES)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def is_video(path: str | os.PathLike) -> bool:
    """Whether `path` has a video extension (VIDEO_SUFFIXES)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def kind_of(path: str | os.PathLike) -> str:
    """"image", "video" or "unsupported", by the file's extension."""
    if is_image(path):
        return "image"
    if is_video(path):
        return "video"
    return "unsupported"
