"""Reading an image file (or uploaded bytes) into [H, W, 3] uint8 RGB, with one EXIF rule.

EXIF orientation: applied by default, so the pixels are as viewers show them (what a user
clicks on); with `stored_pixels` the pixels are as stored, for prompts that refer to the
stored pixels (COCO boxes). Any mode PIL reads is converted by segapp.transforms.to_rgb_uint8
(16-bit gray scaled, alpha dropped).
"""
from __future__ import annotations

import io
import os
from typing import Callable

import numpy as np

# The EXIF tag that asks viewers to rotate or flip the image.
EXIF_ORIENTATION = 0x0112


def read_image(source: str | os.PathLike | bytes, *, stored_pixels: bool = False,
               check_size: Callable[[tuple[int, int]], None] | None = None) -> np.ndarray:
    """An image file or its bytes -> [H, W, 3] uint8 RGB (a writable array).

    check_size: called with (width, height) from the file's header before the pixels are
      decoded (so an upload over a size limit is refused without decoding it).
    Raises ValueError naming the problem when the data is empty, corrupt or not an image;
    OSErrors of the file system (missing file, no permission) pass through."""
    from PIL import Image, UnidentifiedImageError

    from segapp.transforms import to_rgb_uint8

    opened = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        with Image.open(opened) as im:
            if check_size is not None:
                check_size(im.size)
            im.load()
            if stored_pixels:
                im.getexif().pop(EXIF_ORIENTATION, None)  # to_rgb_uint8 then leaves it as stored
            rgb = to_rgb_uint8(im)
    except UnidentifiedImageError as err:  # its message only names the file
        raise ValueError("not a readable image (empty, corrupt or not an image)") from err
    except SyntaxError as err:
        raise ValueError(f"not a readable image (corrupt): {err}") from err
    except OSError as err:
        if err.errno is not None:  # the file system's error, not the decoder's
            raise
        raise ValueError(f"not a readable image (corrupt or truncated): {err}") from err
    return rgb if rgb.flags.writeable else rgb.copy()  # PIL's arrays are read-only; torch warns on them
