"""Ground-truth label masks of the DAVIS and interactive-segmentation benchmarks, as id maps.

Two kinds of file are read, both as DAVIS and the `img/ + gt/` benchmarks ship them:
- a palette PNG (PIL mode "P"): each palette index is an object id, 0 the background; index
  255 marks "void" pixels (object borders in DAVIS 2017) and is read as background, as
  davis2017-evaluation does;
- a single-object mask: grayscale (or RGB with equal channels, or 1-bit) whose values are
  only 0 and 255 (0 and 1 for 1-bit): 255 is object 1 (DAVIS 2016, GrabCut-style `gt/`).
Anything else (grayscale with other values, colour masks) raises LabelMaskError naming the file
and the values found, rather than guessing which values are objects.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

VOID_ID = 255  # palette index of "void" pixels in DAVIS annotations
BINARY_FOREGROUND = 255
MAX_VALUES_SHOWN = 8


class LabelMaskError(ValueError):
    """A mask file that cannot be read as a palette or 0/255 mask."""


def read_label_mask(path: str | Path) -> np.ndarray:
    """[H, W] uint8 object ids (0 background) of a palette or 0/255 mask file."""
    from PIL import Image

    path = Path(path)
    try:
        with Image.open(path) as image:
            mode = image.mode
            array = np.asarray(image)
    except (OSError, SyntaxError, ValueError) as err:
        raise LabelMaskError(f"cannot read mask {path}: {err}") from err
    if mode == "P":
        ids = array.astype(np.uint8, copy=True)
        ids[ids == VOID_ID] = 0
        return ids
    if mode == "1":
        return array.astype(np.uint8)
    if array.ndim == 3:
        if array.shape[2] in (3, 4) and (array[..., :3] == array[..., :1]).all():
            array = array[..., 0]
        else:
            raise LabelMaskError(f"{path} is a colour ({mode}) image, not a palette or 0/255 mask; "
                                 "save object masks as palette PNGs or 0/255 grayscale")
    values = np.unique(array)
    if not set(values.tolist()) <= {0, BINARY_FOREGROUND}:
        shown = ", ".join(str(v) for v in values[:MAX_VALUES_SHOWN])
        more = ", ..." if len(values) > MAX_VALUES_SHOWN else ""
        raise LabelMaskError(f"{path} has values {shown}{more}: a mask must be a palette PNG "
                             "(one object per index) or grayscale with only 0 and 255")
    return (array == BINARY_FOREGROUND).astype(np.uint8)


def object_ids(ids: np.ndarray) -> list[int]:
    """The object ids present in an id map, ascending (0, the background, left out)."""
    return [int(v) for v in np.unique(ids) if v != 0]
