"""Simulated training prompts on hand-made masks."""
from __future__ import annotations

import torch

from segapp.training import prompts as P


def _rect(h=32, w=32, y0=8, y1=20, x0=4, x1=24):
    m = torch.zeros(h, w, dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


def test_boxes_from_masks_use_coco_convention():
    masks = torch.stack([_rect(), torch.zeros(32, 32, dtype=torch.bool)])
    assert P.boxes_from_masks(masks).tolist() == [[4.0, 8.0, 24.0, 20.0], [0.0, 0.0, 0.0, 0.0]]


def test_jittered_boxes_stay_within_the_bounds():
    box = torch.tensor([[40.0, 50.0, 140.0, 90.0]]).repeat(2000, 1)  # 100 x 40
    gen = torch.Generator().manual_seed(0)
    out = P.jitter_boxes(box, 256, gen, fraction=0.1, max_px=6.0)
    # x sides move at most min(10, 6) = 6 px, y sides at most min(4, 6) = 4 px
    dx = (out[:, [0, 2]] - box[:, [0, 2]]).abs()
    dy = (out[:, [1, 3]] - box[:, [1, 3]]).abs()
    assert dx.max() <= 6.0 + 1e-5 and dy.max() <= 4.0 + 1e-5
    assert dx.max() > 5.0 and dy.max() > 3.0  # and they do move, over the whole range
    # default bound: SAM 2's 20 px at 1024, i.e. 5 px at 256
    out = P.jitter_boxes(box, 256, gen)
    assert (out - box)[:, [0, 2]].abs().max() <= 5.0 + 1e-5
    # clamped to the image, corners ordered
    edge = P.jitter_boxes(torch.tensor([[0.0, 0.0, 256.0, 256.0]]).repeat(100, 1), 256, gen)
    assert edge.min() >= 0 and edge.max() <= 256
    assert (edge[:, 0] <= edge[:, 2]).all() and (edge[:, 1] <= edge[:, 3]).all()


def test_box_prompts_are_labelled_corners():
    coords, labels = P.box_prompts(_rect()[None], torch.Generator().manual_seed(1))
    assert coords.shape == (1, 2, 2) and labels.tolist() == [[2, 3]]


def test_positive_points_fall_inside_the_mask_and_cover_it():
    mask = _rect()
    masks = mask[None].repeat(3000, 1, 1)
    coords, labels = P.point_prompts(masks, torch.Generator().manual_seed(2))
    assert labels.eq(1).all()
    x, y = coords[:, 0, 0].long(), coords[:, 0, 1].long()
    assert mask[y, x].all()
    assert len(set(zip(x.tolist(), y.tolist()))) > 200  # spread over the 240 pixels
    empty = torch.zeros(1, 32, 32, dtype=torch.bool)
    _, labels = P.point_prompts(empty)
    assert labels.tolist() == [[-1]]


def test_corrective_clicks_label_false_negatives_positive_and_false_positives_negative():
    gen = torch.Generator().manual_seed(3)
    gt = _rect()
    # missed entirely: a positive click inside the object
    coords, labels = P.corrective_clicks(gt[None], torch.zeros_like(gt)[None], gen)
    x, y = coords[0, 0].long().tolist()
    assert labels.tolist() == [[1]] and gt[y, x]
    # object found plus a spurious region: a negative click in the spurious region
    pred = gt | _rect(y0=24, y1=30, x0=0, x1=10)
    coords, labels = P.corrective_clicks(gt[None], pred[None], gen)
    x, y = coords[0, 0].long().tolist()
    assert labels.tolist() == [[0]] and pred[y, x] and not gt[y, x]
    # both errors: each click is labelled by the kind of error it lands on
    pred = _rect(y0=8, y1=14) | _rect(y0=24, y1=30, x0=0, x1=10)
    n = 500
    coords, labels = P.corrective_clicks(gt[None].repeat(n, 1, 1), pred[None].repeat(n, 1, 1), gen)
    x, y = coords[:, 0, 0].long(), coords[:, 0, 1].long()
    assert (labels[:, 0] == gt[y, x].long()).all()
    assert (gt[y, x] ^ pred[y, x]).all()  # always on an error
    assert 0 < labels.sum() < n
    # exact prediction: a positive point inside the object
    coords, labels = P.corrective_clicks(gt[None], gt[None], gen)
    x, y = coords[0, 0].long().tolist()
    assert labels.tolist() == [[1]] and gt[y, x]


def test_prompts_are_reproducible_from_the_generator_seed():
    masks = _rect()[None].repeat(4, 1, 1)
    a = P.box_prompts(masks, torch.Generator().manual_seed(7))[0]
    b = P.box_prompts(masks, torch.Generator().manual_seed(7))[0]
    c = P.box_prompts(masks, torch.Generator().manual_seed(8))[0]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_sampled_points_are_uniform_over_the_region_and_stay_inside():
    """sample_points draws the k-th region pixel for k uniform in 0..count-1: every pixel of a
    scattered region about equally often, never one outside, none for an empty region."""
    region = torch.zeros(8, 8, dtype=torch.bool)
    cells = [(1, 2), (5, 7), (7, 0), (0, 0), (7, 7)]
    for y, x in cells:
        region[y, x] = True
    regions = region[None].repeat(10000, 1, 1)
    regions[:5] = False
    xy, found = P.sample_points(regions, torch.Generator().manual_seed(0))
    assert not found[:5].any() and found[5:].all() and xy[:5].eq(0).all()
    picks = [(int(y), int(x)) for x, y in xy[5:].long().tolist()]
    counts = {c: picks.count(c) for c in cells}
    assert sum(counts.values()) == len(picks)
    assert all(abs(n - len(picks) / 5) < 0.1 * len(picks) / 5 for n in counts.values()), counts


def _sample_points_flat(regions, generator):
    """The one-search form of sample_points: a binary search of the running count over all
    H * W pixels in raster order (what sample_points computes in two shorter searches)."""
    p, h, w = regions.shape
    running = regions.reshape(p, h * w).to(torch.int32).cumsum(dim=1, dtype=torch.int32)
    count = running[:, -1]
    u = torch.rand(p, generator=generator, dtype=torch.float64)
    k = (u * count).to(torch.int32).clamp(max=(count - 1).clamp(min=0))
    index = torch.searchsorted(running, (k + 1)[:, None]).squeeze(1).clamp(max=h * w - 1)
    xy = torch.stack([index % w, index // w], dim=1).float()
    return torch.where((count > 0)[:, None], xy, torch.zeros_like(xy)), count > 0


def test_sampled_points_are_the_kth_pixel_in_raster_order():
    """Row then column search picks exactly the pixel of the flat search, for the same draws:
    sparse, dense, single-pixel, full and empty regions, and a non-square grid."""
    gen = torch.Generator().manual_seed(4)
    for h, w in ((16, 16), (9, 23)):
        density = torch.rand(300, 1, 1, generator=gen) ** 3
        regions = torch.rand(300, h, w, generator=gen) < density
        regions[0], regions[1], regions[2] = False, True, False
        regions[2, h - 1, w - 1] = True
        xy, found = P.sample_points(regions, torch.Generator().manual_seed(9))
        xy_flat, found_flat = _sample_points_flat(regions, torch.Generator().manual_seed(9))
        assert torch.equal(found, found_flat) and torch.equal(xy, xy_flat)
        assert xy[2].tolist() == [w - 1, h - 1] and not found[0]


def test_corrective_clicks_draw_as_sample_points_of_the_error_or_the_target():
    """corrective_clicks (which never builds the region) draws what sample_points draws from
    the error region, or from the target where the prediction is exact, for the same draws."""
    gen = torch.Generator().manual_seed(5)
    targets = torch.rand(200, 12, 17, generator=gen) < 0.3
    predictions = torch.rand(200, 12, 17, generator=gen) < 0.3
    predictions[:20] = targets[:20]  # exact: drawn from the target
    targets[:5] = predictions[:5] = False  # both empty: nothing to draw
    errors = targets ^ predictions
    regions = torch.where(errors.flatten(1).any(dim=1)[:, None, None], errors, targets)
    expected, found = P.sample_points(regions, torch.Generator().manual_seed(6))
    for rows in (None, targets.sum(dim=2, dtype=torch.int32)):
        xy, labels = P.corrective_clicks(targets, predictions, torch.Generator().manual_seed(6), rows)
        assert torch.equal(xy[:, 0], expected)
        assert labels[:5].eq(-1).all() and labels[5:20].eq(1).all() and not found[:5].any()
