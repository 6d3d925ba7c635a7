"""Instance-id maps: overlapping binary masks painted into one [H, W] uint16 map, and its PNG.

The overlap rule (one for the demo, `segapp segment` and every other writer): masks are
painted largest first, so where masks overlap the pixel goes to the *smaller* object and an
object inside another keeps its pixels; between masks of equal area the later one wins.
0 is the background; ids are 1..65535.

The PNG is 8-bit gray when every id fits (<= 255), else 16-bit gray.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

MAX_8BIT_ID = 255
MAX_ID = 65535


def instance_id_map(masks: Iterable[np.ndarray], hw: tuple[int, int],
                    ids: Iterable[int] | None = None) -> np.ndarray:
    """masks: [H, W] bool each -> [H, W] uint16 map: 0 background, ids[k] (default k + 1)
    where masks[k] wins under the overlap rule (smaller objects on top, see the module)."""
    masks = [np.asarray(m, dtype=bool) for m in masks]
    ids = list(range(1, len(masks) + 1)) if ids is None else [int(i) for i in ids]
    if len(ids) != len(masks):
        raise ValueError(f"{len(masks)} masks but {len(ids)} ids")
    bad = [i for i in ids if not 0 < i <= MAX_ID]
    if bad:
        raise ValueError(f"instance ids must be in 1..{MAX_ID}, got {bad[0]}")
    out = np.zeros(hw, dtype=np.uint16)
    areas = [int(m.sum()) for m in masks]
    for k in sorted(range(len(masks)), key=lambda k: -areas[k]):  # stable: equal areas keep their order
        out[masks[k]] = ids[k]
    return out


def encode_id_png(id_map: np.ndarray, sixteen_bit: bool | None = None) -> bytes:
    """[H, W] ids -> PNG bytes: 8-bit when every id fits (<= 255), else 16-bit.

    sixteen_bit: force the depth (a video uses one depth for all its frames)."""
    import cv2

    if id_map.ndim != 2:
        raise ValueError(f"id_map must be [H, W], got shape {id_map.shape}")
    top = int(id_map.max()) if id_map.size else 0
    if sixteen_bit is None:
        sixteen_bit = top > MAX_8BIT_ID
    if not sixteen_bit and top > MAX_8BIT_ID:
        raise ValueError(f"id {top} does not fit an 8-bit PNG")
    ok, buf = cv2.imencode(".png", id_map.astype(np.uint16 if sixteen_bit else np.uint8))
    if not ok:
        raise RuntimeError("OpenCV could not encode the instance-id PNG")
    return buf.tobytes()


def read_id_png(path: str | Path) -> np.ndarray:
    """Instance-id PNG (8- or 16-bit) -> [H, W] uint16."""
    import cv2

    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ValueError(f"cannot read PNG {path}")
    return arr.astype(np.uint16)
