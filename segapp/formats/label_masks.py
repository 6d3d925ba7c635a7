"""Label mask files (DAVIS annotations, the interactive-segmentation benchmarks' `gt/` masks,
id masks for training) read as [H, W] uint8 object-id maps, 0 the background.

One reader, two rules for what the pixel values mean:
- the benchmark rule (`segapp eval`; `gray_ids=False`): a palette PNG (mode "P") gives one
  object per palette index, index 255 "void" (DAVIS 2017 object borders) read as background,
  as davis2017-evaluation does; a single-object mask (grayscale, RGB with equal channels, or
  1-bit) must hold only 0 and 255 (0 and 1 for 1-bit), 255 being object 1 (DAVIS 2016,
  GrabCut-style). Anything else raises LabelMaskError naming the file and the values found,
  rather than guessing which values are objects.
- the id-mask rule (`segapp train-video`; `gray_ids=True`): palette or gray PNGs (modes 1, L,
  P, I;16, I) whose values are object ids; a mask whose only non-zero value is 255 (or 1) is
  one object, id 1; otherwise 255 is void (0). Colour images and ids above 254 are refused.

A file that cannot be decoded raises UnreadableMaskError (a LabelMaskError), so that a caller
may skip it while refusing a malformed one.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

VOID_ID = 255  # palette index of "void" pixels in DAVIS annotations
BINARY_FOREGROUND = 255
MAX_VALUES_SHOWN = 8
# Image modes an id mask may have (the id-mask rule).
ID_MASK_MODES = ("1", "L", "P", "I;16", "I")
MAX_OBJECT_ID = 254


class LabelMaskError(ValueError):
    """A mask file that cannot be read under its rule (the message names the file)."""


class UnreadableMaskError(LabelMaskError):
    """A mask file that cannot be decoded at all."""


def read_label_mask(path: str | Path, *, gray_ids: bool = False) -> np.ndarray:
    """[H, W] uint8 object ids (0 background) of a mask file, under the benchmark rule, or the
    id-mask rule with `gray_ids` (see the module docstring)."""
    from PIL import Image

    path = Path(path)
    try:
        with Image.open(path) as image:
            mode = image.mode
            if gray_ids and mode not in ID_MASK_MODES:
                raise LabelMaskError(f"mask {path} is a {mode} image; masks must be palette or gray PNGs "
                                     "(0 background, object ids or 255 for one object)")
            array = np.asarray(image.convert("L") if gray_ids and mode == "1" else image)
    except (OSError, SyntaxError, ValueError) as err:
        if isinstance(err, LabelMaskError):
            raise
        raise UnreadableMaskError(f"cannot read mask {path}: {err}") from err
    return _id_mask(path, array) if gray_ids else _benchmark_mask(path, mode, array)


def _benchmark_mask(path: Path, mode: str, array: np.ndarray) -> np.ndarray:
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


def _id_mask(path: Path, array: np.ndarray) -> np.ndarray:
    ids = array.astype(np.int64)
    values = set(np.unique(ids).tolist()) - {0}
    if values <= {VOID_ID} or values <= {1}:
        return (ids > 0).astype(np.uint8)
    if max(values - {VOID_ID}) > MAX_OBJECT_ID:
        raise LabelMaskError(f"mask {path} has object id {max(values)}; at most {MAX_OBJECT_ID} objects "
                             "are supported")
    ids[ids == VOID_ID] = 0
    return ids.astype(np.uint8)


def object_ids(ids: np.ndarray) -> list[int]:
    """The object ids present in an id map, ascending (0, the background, left out)."""
    return [int(v) for v in np.unique(ids) if v != 0]
