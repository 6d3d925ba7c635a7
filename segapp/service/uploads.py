"""Uploaded images: decoded into RGB and checked against the limits before any model runs."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from segapp.service.limits import DemoError, Limits, check_upload_size


def load_image(source, limits: Limits) -> np.ndarray:
    """Validate and decode an upload: a path, bytes, a PIL image or an array -> [H, W, 3] uint8.

    Raises DemoError for files that are too large, not images, or too big in pixels."""
    from PIL import Image

    from segapp.formats.images import read_image
    from segapp.transforms import to_rgb_uint8

    def check_pixels(wh: tuple[int, int]) -> None:
        w, h = wh
        if max(w, h) > limits.max_image_side:
            raise DemoError(f"the image is {w}x{h} pixels; the limit is {limits.max_image_side} "
                            "pixels on the longest side: downscale it first")
        if min(w, h) < 1:
            raise DemoError(f"the image is empty ({w}x{h})")

    if source is None:
        raise DemoError("no image given: upload an image (PNG, JPEG, WebP, ...) first")
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise DemoError(f"image file not found: {path.name}")
        check_upload_size(path.stat().st_size, path.name, limits.max_upload_bytes)
        try:
            return read_image(path, check_size=check_pixels)
        except (ValueError, OSError) as err:
            if isinstance(err, DemoError):
                raise
            raise DemoError(f"{path.name} is not an image we can read (PNG, JPEG, WebP, BMP, TIFF): {err}") from err
    if isinstance(source, (bytes, bytearray)):
        check_upload_size(len(source), "upload", limits.max_upload_bytes)
        try:
            return read_image(bytes(source), check_size=check_pixels)
        except (ValueError, OSError) as err:
            if isinstance(err, DemoError):
                raise
            raise DemoError(f"the upload is not an image we can read: {err}") from err
    if isinstance(source, Image.Image):
        check_pixels(source.size)
        return np.array(to_rgb_uint8(source))
    if isinstance(source, np.ndarray):
        if source.ndim not in (2, 3):
            raise DemoError(f"an image array must be [H, W] or [H, W, C], got shape {source.shape}")
        check_pixels((source.shape[1], source.shape[0]))
        try:
            return to_rgb_uint8(source)
        except (TypeError, ValueError) as err:
            raise DemoError(f"cannot use this array as an image: {err}") from err
    raise DemoError(f"unsupported image input of type {type(source).__name__}")


def image_key(image: np.ndarray) -> str:
    """A key of an image's content and shape (the same pixels reuse an embedding)."""
    digest = hashlib.sha1(np.ascontiguousarray(image).tobytes())
    digest.update(repr(image.shape).encode())
    return digest.hexdigest()


def check_video(path, limits: Limits) -> float:
    """Check an uploaded video file against the limits before it is opened (DemoError naming
    the problem: missing, empty or too large, not a video extension, unreadable, too many
    frames, too large frames). Returns its frame rate (25 when the file does not say)."""
    import cv2

    from segapp.formats.media import VIDEO_SUFFIXES

    if path is None:
        raise DemoError(f"no video given: upload a video file ({', '.join(VIDEO_SUFFIXES)})")
    path = Path(path)
    if not path.is_file():
        raise DemoError(f"video file not found: {path.name}")
    check_upload_size(path.stat().st_size, path.name, limits.max_video_bytes)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise DemoError(f"{path.name} is not a supported video ({', '.join(VIDEO_SUFFIXES)})")
    cap = cv2.VideoCapture(str(path))
    try:
        frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
        fps = float(cap.get(cv2.CAP_PROP_FPS)) if cap.isOpened() else 0.0
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    finally:
        cap.release()
    if frames <= 0:
        raise DemoError(f"{path.name} could not be read as a video (no frames)")
    if frames > limits.max_video_frames:
        raise DemoError(f"{path.name} has {frames} frames; the limit is {limits.max_video_frames}: trim it first")
    if max(w, h) > limits.max_video_side:
        raise DemoError(f"{path.name} is {w}x{h}; the limit is {limits.max_video_side} pixels "
                        "on the longest side: downscale it first")
    return fps if 0 < fps < 1000 else 25.0
