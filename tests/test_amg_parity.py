"""segapp's AutomaticMaskGenerator against the reference SAM2AutomaticMaskGenerator on the same
random official-format checkpoint, plus its input checks.

Random weights give few distinct masks (most cover the whole image) and predicted IoUs and
stability scores unlike a trained model's. Each case's thresholds were chosen for the seeded
checkpoint below, in gaps between clusters of the observed values (so float noise between
the implementations cannot move a mask across a filter), to keep a handful of masks.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

import reference
import segapp
from segapp import amg

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")

NAME = "sam2.1_hiera_t"
MATCH_IOU = 0.99
# The checkpoint's matrices come from this seed, but its vectors are the reference's own
# random initialisation plus noise, so the global RNG is seeded too: the same weights on
# every run, and the thresholds below keep meaning the same thing.
CHECKPOINT_SEED = 7


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def models(official_checkpoint):
    """Factory: (segapp model, reference model) for a model input size, built once each."""
    with torch.random.fork_rng():
        torch.manual_seed(CHECKPOINT_SEED)
        ckpt = official_checkpoint(NAME, seed=CHECKPOINT_SEED)
    cache = {}

    def get(image_size: int):
        if image_size not in cache:
            seg = segapp.build_model(NAME, checkpoint=ckpt, device="cpu", image_size=image_size)
            ref = reference.build_reference_model(NAME, image_size=image_size, checkpoint=str(ckpt))
            cache[image_size] = (seg, ref)
        return cache[image_size]

    return get


@pytest.fixture(scope="module")
def seg_model(models):
    return models(512)[0]


def truck(h: int = 256, w: int = 384) -> np.ndarray:
    bgr = cv2.imread(str(reference.DATA / "sam2_examples/images/truck.jpg"))
    assert bgr is not None, "truck.jpg missing from the shared data"
    return cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (w, h), interpolation=cv2.INTER_AREA)


def synthetic() -> np.ndarray:
    """320x480: three flat shapes on a dim gradient."""
    h, w = 320, 480
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([20 + 30 * xx / w, 25 + 20 * yy / h, 35 + 0 * xx], axis=-1).astype(np.uint8)
    cv2.circle(img, (110, 95), 45, (235, 60, 50), -1)
    cv2.rectangle(img, (320, 220), (430, 290), (60, 200, 240), -1)
    cv2.ellipse(img, (380, 80), (50, 35), 0, 0, 360, (70, 230, 80), -1)
    return img


def reference_generator(ref_model, image_size: int, **kwargs):
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    gen = SAM2AutomaticMaskGenerator(ref_model, **kwargs)
    side = image_size // 4  # the reference hard-codes its feature sizes for 1024
    gen.predictor._bb_feat_sizes = [(side, side), (side // 2, side // 2), (side // 4, side // 4)]
    return gen


def cv2_connected_components(mask: torch.Tensor):
    """CPU stand-in for the reference's CUDA kernel sam2._C.get_connected_componnets:
    [N, 1, H, W] -> (labels, areas) [N, 1, H, W] int32, 8-connected, zero on background."""
    labels = np.zeros(mask.shape, dtype=np.int32)
    areas = np.zeros(mask.shape, dtype=np.int32)
    for i, m in enumerate(mask.to(torch.uint8).numpy()[:, 0]):
        n, lab, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
        area = stats[:, cv2.CC_STAT_AREA].astype(np.int32)
        area[0] = 0
        labels[i, 0] = lab
        areas[i, 0] = area[lab]
    return torch.from_numpy(labels), torch.from_numpy(areas)


# ---------------------------------------------------------------------------- comparison
def decode(segmentation, hw) -> np.ndarray:
    if isinstance(segmentation, np.ndarray):
        assert segmentation.dtype == bool and segmentation.shape == hw
        return segmentation
    assert segmentation["size"] == list(hw)
    if isinstance(segmentation["counts"], str):
        rle = {"size": segmentation["size"], "counts": segmentation["counts"].encode()}
        return mask_utils.decode(rle).astype(bool)
    return amg.rle_to_mask(segmentation)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def perfect_matching(candidates: list[list[int]], n_right: int) -> list[int] | None:
    """Kuhn's augmenting paths: left i -> one of candidates[i], all distinct; None if impossible."""
    owner = [-1] * n_right

    def augment(i, seen):
        for j in candidates[i]:
            if j not in seen:
                seen.add(j)
                if owner[j] < 0 or augment(owner[j], seen):
                    owner[j] = i
                    return True
        return False

    if not all(augment(i, set()) for i in range(len(candidates))):
        return None
    match = [-1] * len(candidates)
    for j, i in enumerate(owner):
        if i >= 0:
            match[i] = j
    return match


def assert_same_records(seg: list[dict], ref: list[dict], hw, what: str) -> None:
    """Counts equal, a one-to-one matching at mask IoU >= 0.99 between records of the same
    prompt and crop with equal predicted IoU, and equal fields."""
    assert len(seg) == len(ref), f"{what}: {len(seg)} masks from segapp, {len(ref)} from the reference"
    seg_masks = [decode(r["segmentation"], hw) for r in seg]
    ref_masks = [decode(r["segmentation"], hw) for r in ref]
    # A pair may match if it comes from the same prompt and crop, with the same predicted
    # IoU (one point gives several masks) and masks that agree.
    candidates = [[j for j, r in enumerate(ref)
                   if r["point_coords"] == s["point_coords"] and r["crop_box"] == s["crop_box"]
                   and abs(s["predicted_iou"] - r["predicted_iou"]) < 1e-3
                   and mask_iou(seg_masks[i], ref_masks[j]) >= MATCH_IOU]
                  for i, s in enumerate(seg)]
    match = perfect_matching(candidates, len(ref))
    assert match is not None, f"{what}: no one-to-one matching of the masks at IoU >= {MATCH_IOU}"
    for i, j in enumerate(match):
        s, r = seg[i], ref[j]
        assert set(s) == set(r), what
        assert type(s["segmentation"]) is type(r["segmentation"]), what
        assert all(isinstance(v, float) for v in s["bbox"] + s["crop_box"] + s["point_coords"][0]), what
        assert isinstance(s["area"], int) and s["area"] == int(seg_masks[i].sum()), what
        assert abs(s["stability_score"] - r["stability_score"]) < 1e-3, what
        # The same logits give the same boxes and areas; allow the odd boundary pixel whose
        # logit sits within float noise of the threshold.
        assert np.abs(np.subtract(s["bbox"], r["bbox"])).max() <= 1, f"{what}: bbox {s['bbox']} vs {r['bbox']}"
        assert abs(s["area"] - r["area"]) <= max(2, 0.001 * r["area"]), f"{what}: area {s['area']} vs {r['area']}"


def run_both(models, image, image_size, **kwargs):
    seg_model, ref_model = models(image_size)
    seg = segapp.AutomaticMaskGenerator(seg_model, **kwargs).generate(image)
    ref = reference_generator(ref_model, image_size, **kwargs).generate(image)
    return seg, ref


@pytest.fixture
def reference_cpu_components(ref, monkeypatch):
    """Without its CUDA kernel the reference skips hole/sprinkle removal with a warning; give
    it a CPU kernel so that both sides actually clean the masks."""
    import sam2.utils.misc

    monkeypatch.setattr(sam2.utils.misc, "get_connected_components", cv2_connected_components)


def square_synthetic() -> np.ndarray:
    return synthetic()[:, 80:400]


CASES = {
    # name: (image, model input size, generator settings)
    # The default input size, 1024. 4 x 4 points keep 16 masks (8 x 8 kept 64, in the same
    # clusters of predicted IoU and stability, at three times the time).
    "truck": (truck, 1024, dict(points_per_side=4, pred_iou_thresh=0.43, stability_score_thresh=0.15,
                                box_nms_thresh=1.0)),
    # Layer-1 crops of 302 x 302 px of a 320 x 320 image: their inner edges lie within 20 px
    # of the image's, so the crop-edge filter keeps crop masks that random weights would
    # otherwise spread up to every inner edge. (test_amg_functions covers the filter itself.)
    "crops": (square_synthetic, 512, dict(points_per_side=6, crop_n_layers=1, crop_overlap_ratio=0.885,
                                          pred_iou_thresh=0.0, stability_score_thresh=0.3, box_nms_thresh=0.99,
                                          crop_nms_thresh=0.99, output_mode="coco_rle")),
    "single-mask": (synthetic, 512, dict(points_per_side=4, multimask_output=False, pred_iou_thresh=0.0,
                                         stability_score_thresh=0.0, box_nms_thresh=1.0,
                                         output_mode="uncompressed_rle")),
    "m2m": (truck, 512, dict(points_per_side=4, use_m2m=True, pred_iou_thresh=0.7345, stability_score_thresh=0.0,
                             box_nms_thresh=0.995, output_mode="uncompressed_rle")),
}
SMALL_REGIONS = dict(points_per_side=4, min_mask_region_area=25, pred_iou_thresh=0.6, stability_score_thresh=0.0,
                     box_nms_thresh=0.95)


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_matches_reference(case, models):
    make_image, image_size, kwargs = CASES[case]
    image = make_image()
    seg, ref = run_both(models, image, image_size, **kwargs)
    assert 5 <= len(ref) <= 80, f"{case}: the settings should keep a handful of masks, kept {len(ref)}"
    if case == "crops":
        assert len({tuple(r["crop_box"]) for r in ref}) >= 2, "crop masks should survive"
    assert_same_records(seg, ref, image.shape[:2], case)


@pytest.mark.slow
def test_small_regions_match_reference(models, reference_cpu_components):
    image = truck()
    seg, ref = run_both(models, image, 512, **SMALL_REGIONS)
    assert 5 <= len(ref) <= 80
    assert_same_records(seg, ref, image.shape[:2], "small-regions")


# ---------------------------------------------------------------------------- segapp only
def test_measure_agrees_with_pure_functions(seg_model, monkeypatch):
    """The generator's fused per-chunk pass equals upsample + stability + box from amg."""
    import segapp.automatic_mask_generator as module

    gen = segapp.AutomaticMaskGenerator(seg_model, points_per_side=2, stability_score_thresh=0.3,
                                        mask_threshold=0.5, stability_score_offset=2.0)
    low = torch.randn(7, 32, 32, generator=torch.Generator().manual_seed(0)) * 6
    low[0] = -4.0  # empty: NaN stability, fails the filter
    monkeypatch.setattr(module, "UPSAMPLE_CHUNK_PIXELS", 3 * 50 * 70)  # several chunks
    stability, boxes, stable = gen._measure(low, (50, 70))
    up = torch.nn.functional.interpolate(low[:, None], (50, 70), mode="bilinear", align_corners=False)[:, 0]
    expected = amg.calculate_stability_score(up, 0.5, 2.0)
    torch.testing.assert_close(stability, expected, equal_nan=True)
    assert stable.tolist() == (expected >= 0.3).tolist()
    ref_boxes = amg.batched_mask_to_box(up > 0.5)
    assert torch.equal(boxes[stable], ref_boxes[stable])
    assert not stable[0]


def test_generate_accepts_pil_and_explicit_grid(seg_model):
    image = synthetic()
    by_side = segapp.AutomaticMaskGenerator(seg_model, points_per_side=3, pred_iou_thresh=0.0,
                                            stability_score_thresh=0.0, box_nms_thresh=0.9)
    by_grid = segapp.SAM2AutomaticMaskGenerator(seg_model, points_per_side=None,
                                                point_grids=[amg.build_point_grid(3)], pred_iou_thresh=0.0,
                                                stability_score_thresh=0.0, box_nms_thresh=0.9)
    a = by_side.generate(image)
    b = by_grid.generate(Image.fromarray(image))
    assert len(a) == len(b) >= 1
    for x, y in zip(a, b):
        assert np.array_equal(x["segmentation"], y["segmentation"])
        fields = [k for k in x if k != "segmentation"]
        assert [x[k] for k in fields] == [y[k] for k in fields]
        assert x["segmentation"].shape == image.shape[:2]
        x0, y0, w, h = x["bbox"]
        ys, xs = np.nonzero(x["segmentation"])
        assert [x0, y0, x0 + w, y0 + h] == [xs.min(), ys.min(), xs.max(), ys.max()]
    # The predictor is left without an image: the generator does not keep state between calls.
    assert not by_side.predictor.is_image_set


def test_min_mask_region_area_cleans_low_res_masks(seg_model):
    """As the official generator: holes and islands up to min_mask_region_area low-res pixels
    are removed by the owned predictor before upsampling."""
    image = truck()
    cleaned_gen = segapp.AutomaticMaskGenerator(seg_model, **SMALL_REGIONS)
    assert cleaned_gen.predictor.max_hole_area == cleaned_gen.predictor.max_sprinkle_area == 25
    cleaned = cleaned_gen.generate(image)
    plain = segapp.AutomaticMaskGenerator(seg_model, **dict(SMALL_REGIONS, min_mask_region_area=0)).generate(image)
    assert len(cleaned) >= 1 and len(plain) >= 1
    assert sorted(r["area"] for r in cleaned) != sorted(r["area"] for r in plain)


def test_bad_arguments(seg_model):
    with pytest.raises(ValueError, match="exactly one of points_per_side and point_grids"):
        segapp.AutomaticMaskGenerator(seg_model, points_per_side=8, point_grids=[amg.build_point_grid(4)])
    with pytest.raises(ValueError, match="exactly one of points_per_side and point_grids"):
        segapp.AutomaticMaskGenerator(seg_model, points_per_side=None)
    with pytest.raises(ValueError, match="output_mode"):
        segapp.AutomaticMaskGenerator(seg_model, output_mode="polygons")
    with pytest.raises(ValueError, match="one per layer"):
        segapp.AutomaticMaskGenerator(seg_model, points_per_side=None, point_grids=[amg.build_point_grid(4)],
                                      crop_n_layers=1)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        segapp.AutomaticMaskGenerator(seg_model, points_per_side=None, point_grids=[amg.build_point_grid(4) * 10])
    with pytest.raises(ValueError, match="leaves no points"):
        segapp.AutomaticMaskGenerator(seg_model, points_per_side=2, crop_n_layers=2, crop_n_points_downscale_factor=2)
    with pytest.raises(ValueError, match="points_per_batch"):
        segapp.AutomaticMaskGenerator(seg_model, points_per_batch=0)
    with pytest.raises(TypeError):
        segapp.AutomaticMaskGenerator(seg_model, points_per_sid=8)  # no **kwargs swallowing typos


def test_bad_images(seg_model):
    gen = segapp.AutomaticMaskGenerator(seg_model, points_per_side=2)
    with pytest.raises(ValueError, match="empty"):
        gen.generate(np.zeros((0, 10, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="shape"):
        gen.generate(np.zeros((10, 10, 5), dtype=np.uint8))
    with pytest.raises(TypeError):
        gen.generate(torch.zeros(10, 10, 3, dtype=torch.uint8))
