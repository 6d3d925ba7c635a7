"""The palette id PNG (segapp.formats.id_maps) and per-object opacity and hiding in the overlay
tint (segapp.formats.overlay)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from segapp.formats.id_maps import encode_id_png, encode_palette_png, read_id_png
from segapp.formats.overlay import OVERLAY_ALPHA, id_colour, tint


def test_palette_png_pixels_are_the_ids_and_its_palette_the_colours(tmp_path):
    ids = np.zeros((6, 7), np.uint16)
    ids[1:3, 1:4], ids[4, :], ids[0, 6] = 1, 2, 255
    path = tmp_path / "ids.png"
    path.write_bytes(encode_palette_png(ids, {1: (10, 20, 30)}))
    with Image.open(path) as image:
        assert image.format == "PNG" and image.mode == "P"
        np.testing.assert_array_equal(np.asarray(image), ids)
        palette = np.array(image.getpalette()[:3 * 256]).reshape(-1, 3)
        coloured = np.asarray(image.convert("RGB"))  # what a viewer shows
    assert tuple(palette[0]) == (0, 0, 0) and tuple(palette[1]) == (10, 20, 30)
    assert tuple(palette[2]) == id_colour(2) and tuple(palette[255]) == id_colour(255)
    assert tuple(coloured[4, 0]) == id_colour(2) and tuple(coloured[1, 1]) == (10, 20, 30)
    np.testing.assert_array_equal(read_id_png(path), ids)  # the ids, not the colours
    gray = tmp_path / "gray.png"
    gray.write_bytes(encode_id_png(ids))
    np.testing.assert_array_equal(read_id_png(gray), read_id_png(path))
    (tmp_path / "not.png").write_bytes(b"not a png")
    for bad in (tmp_path / "not.png", tmp_path / "missing.png"):
        with pytest.raises(ValueError, match="cannot read PNG"):
            read_id_png(bad)


def test_palette_png_refuses_ids_over_255():
    ids = np.zeros((3, 3), np.uint16)
    ids[1, 1] = 256
    with pytest.raises(ValueError, match="a palette PNG holds ids 0..255, got 256; use the 16-bit"):
        encode_palette_png(ids)
    with pytest.raises(ValueError, match=r"id_map must be \[H, W\]"):
        encode_palette_png(np.zeros((2, 2, 2), np.uint8))


def test_tint_takes_an_opacity_per_object_and_leaves_hidden_objects_untouched():
    rgb = np.full((2, 4, 3), 100, np.uint8)
    ids = np.array([[0, 1, 2, 3], [1, 2, 3, 3]], np.uint16)
    colours = {1: (200, 0, 0), 2: (0, 200, 0), 3: (0, 0, 200)}
    out = tint(rgb, ids, colours, alphas={1: 1.0, 2: 0.25}, hidden={3})
    np.testing.assert_array_equal(out[0, 0], [100, 100, 100])  # background
    np.testing.assert_array_equal(out[0, 1], [200, 0, 0])  # opaque
    np.testing.assert_array_equal(out[0, 2], [75, 125, 75])  # 0.75 * 100 + 0.25 * colour
    np.testing.assert_array_equal(out[1, 2:], rgb[1, 2:])  # hidden
    default = tint(rgb, ids, colours, alphas={2: 0.25})  # ids without an opacity get alpha
    np.testing.assert_array_equal(default[0, 1], np.round(0.5 * 100 + 0.5 * np.array([200, 0, 0])))
    np.testing.assert_array_equal(tint(rgb, ids, colours), tint(rgb, ids, colours, OVERLAY_ALPHA, alphas={}, hidden=()))
    np.testing.assert_array_equal(tint(rgb, ids, colours, hidden={1, 2, 3}), rgb)


def test_tint_names_an_opacity_outside_0_to_1():
    ids = np.ones((2, 2), np.uint16)
    with pytest.raises(ValueError, match=r"alphas\[1\] must be in 0..1, got 1.5"):
        tint(np.zeros((2, 2, 3), np.uint8), ids, alphas={1: 1.5})
    with pytest.raises(ValueError, match="alpha must be in 0..1, got -0.1"):
        tint(np.zeros((2, 2, 3), np.uint8), ids, alpha=-0.1)
