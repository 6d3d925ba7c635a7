"""segapp.formats.polygons: masks as polygon rings on pixel edges, and back through pycocotools."""
from __future__ import annotations

import numpy as np
import pytest
from formats_data import coco_val_images, fill_holes, iou

from segapp.formats.polygons import MIN_RING_AREA, join_rings, mask_to_polygons, polygons_to_mask


def ring_points(ring):
    return {(x, y) for x, y in np.asarray(ring).reshape(-1, 2).tolist()}


def test_rings_run_on_pixel_edges_and_decode_to_the_same_pixels():
    one = np.zeros((8, 8), bool)
    one[5, 3] = True
    (ring,) = mask_to_polygons(one, min_area=0)
    assert ring_points(ring) == {(3, 5), (4, 5), (4, 6), (3, 6)}  # the pixel's unit square
    block = np.zeros((20, 20), bool)
    block[5:10, 3:9] = True
    (ring,) = mask_to_polygons(block)
    assert ring_points(ring) == {(3, 5), (9, 5), (9, 10), (3, 10)}
    np.testing.assert_array_equal(polygons_to_mask([ring], (20, 20)), block)
    full = np.ones((4, 6), bool)
    assert ring_points(mask_to_polygons(full)[0]) == {(0, 0), (6, 0), (6, 4), (0, 4)}
    assert mask_to_polygons(np.zeros((5, 5), bool)) == []


def test_holes_are_filled_and_small_fragments_dropped_but_never_the_largest():
    mask = np.zeros((40, 40), bool)
    mask[5:25, 5:25] = True
    mask[10:15, 10:15] = False  # a hole
    mask[30, 30] = True  # a 1-pixel sprinkle
    mask[30:33, 35:38] = True  # a 3 x 3 piece: exactly MIN_RING_AREA
    rings = mask_to_polygons(mask)
    assert len(rings) == 2 and MIN_RING_AREA == 9
    drawn = polygons_to_mask(rings, mask.shape)
    assert drawn[10:15, 10:15].all()  # the hole is filled
    assert not drawn[30, 30] and drawn[30:33, 35:38].all()
    assert len(mask_to_polygons(mask, min_area=0)) == 3
    assert len(mask_to_polygons(mask, min_area=1000)) == 1  # the largest stays
    tiny = np.zeros((9, 9), bool)
    tiny[4, 4] = True
    assert polygons_to_mask(mask_to_polygons(tiny), tiny.shape).sum() == 1


def test_tolerance_simplifies_a_disc_with_fewer_points():
    yy, xx = np.mgrid[:100, :100]
    disc = (xx - 50) ** 2 + (yy - 50) ** 2 < 35 ** 2
    exact, = mask_to_polygons(disc)
    simple, = mask_to_polygons(disc, tolerance=1.0)
    assert len(simple) < len(exact) / 3
    assert iou(polygons_to_mask([exact], disc.shape), disc) == 1.0
    assert iou(polygons_to_mask([simple], disc.shape), disc) > 0.97


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match=r"mask must be \[H, W\]"):
        mask_to_polygons(np.zeros((2, 3, 3), bool))
    with pytest.raises(ValueError, match="min_area and tolerance must be >= 0"):
        mask_to_polygons(np.ones((3, 3), bool), tolerance=-1)
    with pytest.raises(ValueError, match="polygon ring 1 has 4 numbers"):
        polygons_to_mask([[0, 0, 2, 0, 2, 2], [0, 0, 1, 1]], (4, 4))


def test_coco_masks_round_trip_through_pycocotools(shared_data):
    """Real COCO val objects -> rings -> pycocotools frPyObjects/merge/decode: the filled mask
    comes back (IoU 1 but for dropped sprinkles), and the mask itself nearly so (holes)."""
    ious, filled_ious, pieces = [], [], 0
    for hw, masks, _ in coco_val_images(shared_data, 12):
        for mask in masks:
            rings = mask_to_polygons(mask)
            assert all(0 <= v <= hw[1] for r in rings for v in r[0::2])
            assert all(0 <= v <= hw[0] for r in rings for v in r[1::2])
            drawn = polygons_to_mask(rings, hw)
            ious.append(iou(drawn, mask))
            filled_ious.append(iou(drawn, fill_holes(mask)))
            if len(rings) > 1:
                pieces += 1
                np.testing.assert_array_equal(polygons_to_mask([join_rings(rings)], hw), drawn)
    assert len(ious) > 100 and pieces > 5
    assert np.mean(ious) > 0.999 and min(ious) > 0.95
    assert np.mean(filled_ious) > 0.9999


def test_join_rings_bridges_enclose_nothing():
    mask = np.zeros((30, 40), bool)
    mask[2:8, 2:10] = True
    mask[20:28, 25:38] = True
    mask[3:6, 30:36] = True
    rings = mask_to_polygons(mask)
    joined = join_rings(rings)
    # every ring once; each bridge's two ends twice (there and back); the last ring's closing point
    assert len(joined) == sum(len(r) for r in rings) + 2 * 2 * (len(rings) - 1) + 2
    np.testing.assert_array_equal(polygons_to_mask([joined], mask.shape), mask)
    assert join_rings([]) == [] and join_rings(rings[:1]) == rings[0]
