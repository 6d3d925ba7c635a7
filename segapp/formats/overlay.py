"""Overlay images: each object's colour blended over the image, from an instance-id map.

Colours: `palette_colour` gives the demo's distinct colours by object index (Tableau 10);
`id_colour` a stable, well-spread colour for any instance id (golden-ratio hues), used by
`segapp segment`. Both feed the one blend, `tint`.
"""
from __future__ import annotations

import colorsys
from typing import Collection, Mapping

import numpy as np

# Opacity of an object's colour in overlays.
OVERLAY_ALPHA = 0.5
# Distinct colours (Tableau 10), RGB; the index-th object gets PALETTE[index % len(PALETTE)].
PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)
GOLDEN_RATIO_CONJUGATE = 0.618033988749895


def palette_colour(index: int) -> tuple[int, int, int]:
    """The colour of the index-th object (0-based), cycling through PALETTE."""
    return PALETTE[index % len(PALETTE)]


def id_colour(instance_id: int) -> tuple[int, int, int]:
    """A stable, well-spread RGB colour for an instance id (golden-ratio hues)."""
    hue = (instance_id * GOLDEN_RATIO_CONJUGATE) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def tint(rgb: np.ndarray, id_map: np.ndarray, colours: Mapping[int, tuple[int, int, int]] | None = None,
         alpha: float = OVERLAY_ALPHA, *, alphas: Mapping[int, float] | None = None,
         hidden: Collection[int] = ()) -> np.ndarray:
    """[H, W, 3] uint8 RGB (gray [H, W] is repeated) with each id's colour blended over its
    pixels: (1 - a) * pixel + a * colour, rounded, a = alphas[id] where given, else alpha.
    colours: id -> RGB; ids not in it (or all, when None) get `id_colour`. Background (0)
    pixels and those of the `hidden` ids are unchanged."""
    out = np.asarray(rgb, dtype=np.uint8)
    if out.ndim == 2:
        out = np.repeat(out[..., None], 3, axis=2)
    alphas = alphas or {}
    bad = [(i, a) for i, a in [(None, alpha), *alphas.items()] if not 0.0 <= a <= 1.0]
    if bad:
        where = "alpha" if bad[0][0] is None else f"alphas[{bad[0][0]}]"
        raise ValueError(f"{where} must be in 0..1, got {bad[0][1]}")
    ids = np.unique(id_map)
    ids = ids[ids > 0]
    if not len(ids):
        return out.copy()
    colours = colours or {}
    lut = np.zeros((int(ids.max()) + 1, 3), dtype=np.float32)
    opacity = np.zeros(int(ids.max()) + 1, dtype=np.float32)  # 0 leaves the background and hidden ids as they are
    hidden = {int(i) for i in hidden}
    for i in ids:
        lut[i] = colours.get(int(i)) or id_colour(int(i))
        opacity[i] = 0.0 if int(i) in hidden else alphas.get(int(i), alpha)
    blended = out.astype(np.float32)
    fg = opacity[id_map] > 0
    a = opacity[id_map[fg]][:, None]
    blended[fg] = (1 - a) * blended[fg] + a * lut[id_map[fg]]
    return blended.round().astype(np.uint8)
