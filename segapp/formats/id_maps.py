"""Instance-id maps: overlapping binary masks painted into one [H, W] uint16 map, and its PNG.

The overlap rule (one for the demo, `segapp segment` and every other writer): masks are
painted largest first, so where masks overlap the pixel goes to the *smaller* object and an
object inside another keeps its pixels; between masks of equal area the later one wins.
0 is the background; ids are 1..65535.

The PNG is 8-bit gray when every id fits (<= 255), else 16-bit gray. The palette PNG
(`encode_palette_png`, mode "P") holds the same ids as pixel values (at most 255) with a colour
table, so an image viewer shows the objects in colour; `read_id_png` reads all three as ids.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from segapp.formats.overlay import id_colour

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


def encode_palette_png(id_map: np.ndarray, colours: Mapping[int, tuple[int, int, int]] | None = None) -> bytes:
    """[H, W] ids (all <= 255) -> PNG bytes in mode "P": each pixel's value is its id, and the
    palette gives id 0 black and each other id colours[id] (RGB), or `id_colour(id)` where not
    given, so viewers show colours while readers get the ids. ValueError for an id over 255
    (use the 16-bit `encode_id_png`)."""
    import io

    from PIL import Image

    id_map = np.asarray(id_map)
    if id_map.ndim != 2:
        raise ValueError(f"id_map must be [H, W], got shape {id_map.shape}")
    outside = id_map[(id_map < 0) | (id_map > MAX_8BIT_ID)]
    if outside.size:
        raise ValueError(f"a palette PNG holds ids 0..{MAX_8BIT_ID}, got {int(outside.flat[0])}; "
                         "use the 16-bit instance-id PNG (encode_id_png)")
    colours = colours or {}
    table = np.zeros((MAX_8BIT_ID + 1, 3), dtype=np.uint8)
    for i in range(1, MAX_8BIT_ID + 1):
        table[i] = colours.get(i) or id_colour(i)
    h, w = id_map.shape
    image = Image.frombytes("P", (w, h), np.ascontiguousarray(id_map, dtype=np.uint8).tobytes())
    image.putpalette(table.ravel().tolist())
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def read_id_png(path: str | Path) -> np.ndarray:
    """Instance-id PNG (8- or 16-bit gray, or a palette PNG's indices) -> [H, W] uint16."""
    import cv2
    from PIL import Image

    try:
        with Image.open(path) as image:
            if image.mode == "P":  # OpenCV would give the palette's colours, not the ids
                return np.asarray(image).astype(np.uint16)
    except OSError as err:  # missing, or not an image
        raise ValueError(f"cannot read PNG {path}: {err}") from err
    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ValueError(f"cannot read PNG {path}")
    return arr.astype(np.uint16)
