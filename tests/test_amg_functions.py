"""The pure building blocks of segapp.amg, against independent computations and against the
reference's sam2.utils.amg on random data."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from segapp import amg


@pytest.fixture(scope="module")
def ref_amg(ref):
    import sam2.utils.amg as ref_amg

    return ref_amg


def random_masks(rng, n, h, w, density=0.5):
    """Blobby random masks (upsampled noise) plus the edge cases: empty, full, first pixel only."""
    coarse = rng.random((n, max(h // 6, 1), max(w // 6, 1))) < density
    masks = np.kron(coarse, np.ones((6, 6), dtype=bool))[:, :h, :w]
    masks = np.pad(masks, ((0, 0), (0, h - masks.shape[1]), (0, w - masks.shape[2])))
    masks[0] = False
    masks[1] = True
    masks[2] = False
    masks[2, 0, 0] = True
    masks[3] = rng.random((h, w)) < 0.5  # pixel noise: many short runs
    return masks


# ---------------------------------------------------------------------------- grids and crops
@pytest.mark.parametrize("n", [1, 2, 7, 32])
def test_point_grid_is_cell_centres_x_fastest(n, ref_amg):
    grid = amg.build_point_grid(n)
    assert grid.shape == (n * n, 2) and grid.dtype == np.float64
    ys, xs = np.divmod(np.arange(n * n), n)
    np.testing.assert_allclose(grid[:, 0], (xs + 0.5) / n, atol=1e-12)
    np.testing.assert_allclose(grid[:, 1], (ys + 0.5) / n, atol=1e-12)
    np.testing.assert_array_equal(grid, ref_amg.build_point_grid(n))


def test_point_grid_rejects_zero():
    with pytest.raises(ValueError, match="at least one point"):
        amg.build_point_grid(0)


@pytest.mark.parametrize("n,layers,scale", [(16, 2, 2), (32, 3, 1), (10, 1, 3)])
def test_layer_point_grids(n, layers, scale, ref_amg):
    grids = amg.build_all_layer_point_grids(n, layers, scale)
    expected = ref_amg.build_all_layer_point_grids(n, layers, scale)
    assert len(grids) == layers + 1
    for i, (g, e) in enumerate(zip(grids, expected)):
        assert len(g) == int(n / scale ** i) ** 2
        np.testing.assert_array_equal(g, e)


@pytest.mark.parametrize("hw,layers,ratio", [((768, 1024), 0, 512 / 1500), ((768, 1024), 2, 512 / 1500),
                                            ((333, 500), 1, 0.25), ((1000, 601), 3, 0.5), ((64, 64), 1, 0.0)])
def test_crop_boxes(hw, layers, ratio, ref_amg):
    boxes, layer_idxs = amg.generate_crop_boxes(hw, layers, ratio)
    h, w = hw
    assert boxes[0] == [0, 0, w, h] and layer_idxs[0] == 0
    for layer in range(1, layers + 1):
        in_layer = [b for b, i in zip(boxes, layer_idxs) if i == layer]
        assert len(in_layer) == 4 ** layer
        covered = np.zeros(hw, dtype=bool)
        for x0, y0, x1, y1 in in_layer:
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
            assert all(isinstance(v, int) for v in (x0, y0, x1, y1))
            covered[y0:y1, x0:x1] = True
        assert covered.all(), "a crop layer must tile the whole image"
    assert (boxes, layer_idxs) == tuple(ref_amg.generate_crop_boxes(hw, layers, ratio))


def test_uncrop_boxes_points_masks(ref_amg):
    crop = [10, 20, 60, 50]
    boxes = torch.tensor([[0, 0, 5, 5], [3, 4, 49, 29]])
    points = torch.tensor([[1.5, 2.5], [0.0, 29.0]])
    np.testing.assert_array_equal(amg.uncrop_boxes_xyxy(boxes, crop), [[10, 20, 15, 25], [13, 24, 59, 49]])
    np.testing.assert_array_equal(amg.uncrop_points(points, crop), [[11.5, 22.5], [10.0, 49.0]])
    masks = torch.rand(3, 30, 50) > 0.5
    full = amg.uncrop_masks(masks, crop, 80, 70)
    assert full.shape == (3, 80, 70)
    assert torch.equal(full[:, 20:50, 10:60], masks) and full.sum() == masks.sum()
    assert torch.equal(full, ref_amg.uncrop_masks(masks, crop, 80, 70))
    assert amg.uncrop_masks(masks, [0, 0, 50, 30], 30, 50) is masks


def test_box_near_crop_edge(ref_amg):
    rng = np.random.default_rng(0)
    crop, orig = [100, 50, 400, 300], [0, 0, 400, 500]
    xy0 = rng.integers(0, 150, (200, 2))
    boxes = torch.as_tensor(np.concatenate([xy0, xy0 + rng.integers(0, 160, (200, 2))], axis=1))
    near = amg.is_box_near_crop_edge(boxes, crop, orig)
    assert torch.equal(near, ref_amg.is_box_near_crop_edge(boxes, crop, orig))
    # Hand-made: the crop's right edge is the image's, so only left/top/bottom count.
    hand = torch.tensor([[5, 100, 50, 150], [100, 100, 299, 150], [100, 100, 150, 240], [50, 50, 100, 100]])
    assert amg.is_box_near_crop_edge(hand, crop, orig).tolist() == [True, False, True, False]


# ---------------------------------------------------------------------------- boxes
def test_mask_to_box_matches_independent_and_reference(ref_amg):
    rng = np.random.default_rng(1)
    masks = random_masks(rng, 12, 37, 53, density=0.05)
    masks[4] = False
    masks[4, 10, 20] = True
    boxes = amg.batched_mask_to_box(torch.from_numpy(masks))
    assert boxes.dtype == torch.int64 and boxes.shape == (12, 4)
    for m, b in zip(masks, boxes.tolist()):
        if not m.any():
            assert b == [0, 0, 0, 0]
            continue
        ys, xs = np.nonzero(m)
        assert b == [xs.min(), ys.min(), xs.max(), ys.max()]
        assert amg.mask_to_box_np(m) == b
    assert boxes[4].tolist() == [20, 10, 20, 10]
    assert amg.mask_to_box_np(masks[0]) == [0, 0, 0, 0]
    assert torch.equal(boxes, ref_amg.batched_mask_to_box(torch.from_numpy(masks)).long())
    nested = amg.batched_mask_to_box(torch.from_numpy(masks).reshape(3, 4, 37, 53))
    assert torch.equal(nested.reshape(12, 4), boxes)
    assert amg.batched_mask_to_box(torch.zeros(0, 5, 5, dtype=torch.bool)).shape == (0, 4)


def test_box_xyxy_to_xywh_copies():
    t = torch.tensor([[1.0, 2.0, 4.0, 7.0]])
    a = np.array([3, 4, 3, 9])
    assert amg.box_xyxy_to_xywh(t).tolist() == [[1.0, 2.0, 3.0, 5.0]]
    assert amg.box_xyxy_to_xywh(a).tolist() == [3, 4, 0, 5]
    assert t.tolist() == [[1.0, 2.0, 4.0, 7.0]] and a.tolist() == [3, 4, 3, 9]


def brute_force_nms(boxes: np.ndarray, scores: np.ndarray, cats: np.ndarray, thr: float) -> list[int]:
    """Textbook greedy NMS: repeatedly take the best remaining box (lowest index on ties)."""
    remaining = list(range(len(boxes)))
    keep = []
    while remaining:
        best = max(remaining, key=lambda i: (scores[i], -i))
        keep.append(best)
        remaining.remove(best)
        survivors = []
        for j in remaining:
            a, b = boxes[best], boxes[j]
            iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
            ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
            inter = iw * ih
            union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
            iou = inter / union if union > 0 else 0.0
            if not (cats[best] == cats[j] and iou > thr):
                survivors.append(j)
        remaining = survivors
    return keep


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("thr", [0.0, 0.3, 0.7])
def test_nms_matches_brute_force(seed, thr):
    rng = np.random.default_rng(seed)
    n = 120
    xy = rng.integers(0, 60, (n, 2))
    boxes = np.concatenate([xy, xy + rng.integers(1, 40, (n, 2))], axis=1).astype(np.float32)
    boxes[5] = boxes[6]  # exact duplicates
    scores = rng.integers(0, 8, n).astype(np.float32) / 8  # many ties
    cats = rng.integers(0, 3, n)
    kept = amg.batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(cats), thr)
    assert kept.dtype == torch.int64
    assert kept.tolist() == brute_force_nms(boxes.astype(np.float64), scores, cats, thr)
    single = amg.nms(torch.from_numpy(boxes), torch.from_numpy(scores), thr)
    assert single.tolist() == brute_force_nms(boxes.astype(np.float64), scores, np.zeros(n), thr)


def test_nms_edge_cases():
    empty = amg.nms(torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert empty.shape == (0,) and empty.dtype == torch.int64
    one = amg.nms(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([0.3]), 0.5)
    assert one.tolist() == [0]
    # IoU exactly at the threshold is not suppressed (strictly greater suppresses).
    boxes = torch.tensor([[0.0, 0.0, 2.0, 1.0], [1.0, 0.0, 3.0, 1.0]])  # IoU 1/3
    assert amg.nms(boxes, torch.tensor([1.0, 0.5]), 1 / 3).tolist() == [0, 1]
    assert amg.nms(boxes, torch.tensor([1.0, 0.5]), 0.33).tolist() == [0]
    # Degenerate (zero-area) boxes: IoU 0/0 is not an overlap.
    flat = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    assert amg.nms(flat, torch.tensor([1.0, 1.0]), 0.5).tolist() == [0, 1]


def test_box_iou_and_area():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [5.0, 5.0, 6.0, 6.0]])
    assert amg.box_area(b).tolist() == [4.0, 1.0]
    torch.testing.assert_close(amg.box_iou(a, b), torch.tensor([[1 / 7, 0.0]]))


# ---------------------------------------------------------------------------- scores
def test_stability_score(ref_amg):
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 3, 40, 50, generator=gen) * 4
    logits[0, 0] = -5.0  # empty at both cut-offs
    score = amg.calculate_stability_score(logits, 0.5, 1.0)
    assert score.shape == (4, 3) and score.dtype == torch.float32
    x = logits.numpy()
    inner = (x > 1.5).sum(axis=(-1, -2))
    outer = (x > -0.5).sum(axis=(-1, -2))
    with np.errstate(invalid="ignore"):
        expected = inner / outer
    np.testing.assert_allclose(score.numpy(), expected, rtol=1e-6)
    assert torch.isnan(score[0, 0])
    torch.testing.assert_close(score, ref_amg.calculate_stability_score(logits, 0.5, 1.0), equal_nan=True)
    assert amg.count_above(logits, 0.0).tolist() == (x > 0).sum(axis=(-1, -2)).tolist()


# ---------------------------------------------------------------------------- RLE
@pytest.mark.parametrize("hw", [(37, 53), (1, 1), (64, 1), (20, 30)])
def test_rle_round_trip_and_reference(hw, ref_amg):
    rng = np.random.default_rng(hw[0] * 100 + hw[1])
    n = 6 if hw[0] * hw[1] > 1 else 2
    masks = random_masks(rng, max(n, 4), *hw)[:n] if hw[0] * hw[1] > 1 else np.array([[[False]], [[True]]])
    rles = amg.mask_to_rle(torch.from_numpy(masks))
    assert rles == amg.mask_to_rle(masks)  # tensor or array in
    assert rles == ref_amg.mask_to_rle_pytorch(torch.from_numpy(masks))
    for m, rle in zip(masks, rles):
        assert rle["size"] == list(hw)
        assert sum(rle["counts"]) == hw[0] * hw[1]
        assert all(c > 0 for c in rle["counts"][1:]), "only the first run may be empty"
        decoded = amg.rle_to_mask(rle)
        assert decoded.dtype == bool and decoded.flags["C_CONTIGUOUS"]
        np.testing.assert_array_equal(decoded, m)
        np.testing.assert_array_equal(decoded, ref_amg.rle_to_mask(rle))
        assert amg.area_from_rle(rle) == int(m.sum()) == ref_amg.area_from_rle(rle)


def test_rle_of_empty_and_full():
    empty, full = np.zeros((3, 4), bool), np.ones((3, 4), bool)
    assert amg.mask_to_rle(empty[None]) == [{"size": [3, 4], "counts": [12]}]
    assert amg.mask_to_rle(full[None]) == [{"size": [3, 4], "counts": [0, 12]}]
    col = np.zeros((3, 4), bool)
    col[:, 1] = True  # column-major: the second column is one run of 3
    assert amg.mask_to_rle(col[None])[0]["counts"] == [3, 3, 6]
    with pytest.raises(ValueError, match="sum"):
        amg.rle_to_mask({"size": [3, 4], "counts": [5]})


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' decode under NumPy 2
def test_coco_rle_decodes_to_same_mask(ref_amg):
    rng = np.random.default_rng(3)
    masks = random_masks(rng, 6, 45, 31)
    for m, rle in zip(masks, amg.mask_to_rle(masks)):
        coco = amg.coco_encode_rle(rle)
        assert isinstance(coco["counts"], str) and coco["size"] == [45, 31]
        decoded = mask_utils.decode({"size": coco["size"], "counts": coco["counts"].encode()})
        np.testing.assert_array_equal(decoded.astype(bool), m)
        assert amg.mask_to_coco_rle(m) == coco
        assert coco == ref_amg.coco_encode_rle(rle)
        assert mask_utils.area({"size": coco["size"], "counts": coco["counts"].encode()}) == amg.area_from_rle(rle)


# ---------------------------------------------------------------------------- small regions
def test_remove_small_holes_hand_made():
    mask = np.zeros((40, 40), bool)
    mask[5:35, 5:35] = True
    mask[10:12, 10:12] = False  # hole of 4 px
    mask[20:30, 20:30] = False  # hole of 100 px
    out, changed = amg.remove_small_regions(mask, 10, "holes")
    assert changed
    expected = mask.copy()
    expected[10:12, 10:12] = True
    np.testing.assert_array_equal(out, expected)
    same, changed = amg.remove_small_regions(mask, 4, "holes")  # area 4 is not < 4
    assert not changed and same is mask


def test_remove_small_islands_hand_made():
    mask = np.zeros((40, 40), bool)
    mask[5:25, 5:25] = True  # 400 px
    mask[30:32, 30:33] = True  # 6 px island
    mask[26, 26] = True  # 1 px island, two pixels off the square's corner
    out, changed = amg.remove_small_regions(mask, 10, "islands")
    assert changed
    expected = np.zeros_like(mask)
    expected[5:25, 5:25] = True
    np.testing.assert_array_equal(out, expected)
    # 8-connectivity: a diagonal neighbour joins the component.
    diag = np.zeros((10, 10), bool)
    diag[2:5, 2:5] = True
    diag[5, 5] = True
    out, changed = amg.remove_small_regions(diag, 5, "islands")
    assert not changed and out.sum() == 10
    # Every island small: the largest is kept.
    tiny = np.zeros((20, 20), bool)
    tiny[1:3, 1:3] = True
    tiny[10:13, 10:13] = True
    out, changed = amg.remove_small_regions(tiny, 100, "islands")
    assert changed and out.sum() == 9 and out[10:13, 10:13].all()
    with pytest.raises(ValueError, match="mode"):
        amg.remove_small_regions(tiny, 5, "bumps")


@pytest.mark.parametrize("mode", ["holes", "islands"])
def test_remove_small_regions_matches_reference(mode, ref_amg):
    rng = np.random.default_rng(5)
    for m in random_masks(rng, 8, 50, 60, density=0.4):
        for thresh in (1, 40, 200):
            out, changed = amg.remove_small_regions(m, thresh, mode)
            ref_out, ref_changed = ref_amg.remove_small_regions(m, thresh, mode)
            assert changed == ref_changed
            np.testing.assert_array_equal(out, ref_out)


# ---------------------------------------------------------------------------- batching and container
def test_batch_iterator():
    a, b = list(range(7)), torch.arange(7) * 2
    batches = list(amg.batch_iterator(3, a, b))
    assert [x for x, _ in batches] == [[0, 1, 2], [3, 4, 5], [6]]
    assert torch.equal(batches[2][1], torch.tensor([12]))
    with pytest.raises(ValueError):
        list(amg.batch_iterator(3, a, b[:5]))
    with pytest.raises(ValueError):
        list(amg.batch_iterator(0, a))


def test_mask_data_filter_cat_numpy():
    data = amg.MaskData(t=torch.arange(5), a=np.arange(5) * 10, l=list("abcde"))
    assert len(data) == 5 and "t" in data
    data.filter(torch.tensor([True, False, True, True, False]))
    assert data["t"].tolist() == [0, 2, 3] and data["a"].tolist() == [0, 20, 30] and data["l"] == ["a", "c", "d"]
    data.filter(torch.tensor([2, 0]))  # indices reorder
    assert data["t"].tolist() == [3, 0] and data["l"] == ["d", "a"]
    data.cat(amg.MaskData(t=torch.tensor([9]), a=np.array([90]), l=["z"]))
    assert data["t"].tolist() == [3, 0, 9] and data["a"].tolist() == [30, 0, 90] and data["l"] == ["d", "a", "z"]
    empty = amg.MaskData()
    assert len(empty) == 0
    empty.cat(data)
    assert len(empty) == 3
    data.to_numpy()
    assert isinstance(data["t"], np.ndarray) and data["t"].dtype == np.float32
    with pytest.raises(ValueError, match="rows"):
        data["x"] = [1]
    with pytest.raises(ValueError, match="columns differ"):
        data.cat(amg.MaskData(t=torch.tensor([1])))
    with pytest.raises(TypeError):
        data["t"] = 3
    del data["l"]
    assert sorted(data.keys()) == ["a", "t"]
