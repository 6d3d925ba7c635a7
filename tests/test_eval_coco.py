"""`segapp eval coco`: decoding, instance selection, clicks, metrics, baselines, CLI, bad input.

Real data: ../shared/data/coco_tiny (80 val2017 images, polygons and RLE crowd regions).
Model-backed checks (the reference predictor, parity with segapp's) are in test_eval_parity.py.
"""
from __future__ import annotations

import csv
import hashlib
import json
import shutil

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from segapp.cli import main
from segapp.evaluation import coco as coco_lib
from segapp.evaluation.baselines import BoxBaseline, GrabCutBaseline
from segapp.evaluation.clicks import Click, first_click, next_click
from segapp.evaluation.metrics import InstanceResult, breakdown, clicks_to_reach, mask_iou
from segapp.evaluation.runner import evaluate

# pycocotools 2.0.x with NumPy 2 warns on every decode; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def coco_tiny(shared_data):
    root = shared_data / "coco_tiny"
    return root / "val2017", root / "annotations" / "instances_val2017.json"


@pytest.fixture(scope="module")
def coco_api(coco_tiny):
    return COCO(str(coco_tiny[1]))


# ------------------------------------------------------------------------------ decoding


def test_decoding_agrees_with_pycocotools_polygons_and_crowd_rle(coco_api):
    kinds = {"polygon": 0, "rle": 0}
    for ann in coco_api.dataset["annotations"]:
        img = coco_api.imgs[ann["image_id"]]
        mask = coco_lib.decode_segmentation(ann["segmentation"], img["height"], img["width"])
        assert mask.dtype == bool and mask.shape == (img["height"], img["width"])
        np.testing.assert_array_equal(mask, coco_api.annToMask(ann).astype(bool))
        kinds["polygon" if isinstance(ann["segmentation"], list) else "rle"] += 1
        if ann["iscrowd"]:
            assert isinstance(ann["segmentation"], dict)  # uncompressed RLE
    assert kinds["polygon"] > 700 and kinds["rle"] == 11


def test_decoding_compressed_rle_as_in_result_files(coco_api):
    # Compressed RLE (`counts` a string) as json.dump writes it: round-trip through JSON.
    checked = 0
    for ann in coco_api.dataset["annotations"][:40]:
        img = coco_api.imgs[ann["image_id"]]
        expected = coco_api.annToMask(ann)
        rle = mask_utils.encode(np.asfortranarray(expected))
        rle = json.loads(json.dumps({"size": rle["size"], "counts": rle["counts"].decode()}))
        mask = coco_lib.decode_segmentation(rle, img["height"], img["width"])
        np.testing.assert_array_equal(mask, expected.astype(bool))
        checked += expected.any()
    assert checked == 40


def test_decoding_rejects_malformed_segmentations():
    with pytest.raises(ValueError, match="neither polygons nor RLE"):
        coco_lib.decode_segmentation({"points": []}, 10, 10)
    with pytest.raises(ValueError, match="x, y pairs"):
        coco_lib.decode_segmentation([[1, 2, 3, 4, 5]], 10, 10)
    with pytest.raises(ValueError, match="RLE size"):
        coco_lib.decode_segmentation({"size": [5, 5], "counts": [25]}, 10, 10)
    # Parts of under 3 points enclose nothing (pycocotools would read [x, y, x, y] as a box).
    assert not coco_lib.decode_segmentation([[1, 1, 8, 8]], 10, 10).any()


def test_instance_selection_on_coco_tiny(coco_tiny, coco_api):
    images_dir, annotations = coco_tiny
    dataset = coco_lib.load_coco_instances(annotations, images_dir)
    anns = coco_api.dataset["annotations"]
    crowd = [a for a in anns if a["iscrowd"]]
    selected = [i for e in dataset.images for i in e.instances]
    assert len(selected) == len(anns) - len(crowd)
    assert [s.reason for s in dataset.skipped] == ["crowd"] * len(crowd)
    assert {s.annotation_id for s in dataset.skipped} == {a["id"] for a in crowd}
    ids = [e.image_id for e in dataset.images]
    assert ids == sorted(ids)
    first = next(e for e in dataset.images)
    ann = next(a for a in anns if a["id"] == first.instances[0].annotation_id)
    x, y, w, h = ann["bbox"]
    assert first.instances[0].bbox_xyxy == (x, y, x + w, y + h)
    assert first.instances[0].category == coco_api.cats[ann["category_id"]]["name"]

    with_crowd = coco_lib.load_coco_instances(annotations, images_dir, include_crowd=True)
    assert sum(len(e.instances) for e in with_crowd.images) == len(anns)
    assert not with_crowd.skipped

    big = coco_lib.load_coco_instances(annotations, images_dir, min_area=96**2, max_images=10)
    assert len(big.images) <= 10
    assert all(i.area >= 96**2 for e in big.images for i in e.instances)
    assert {s.reason for s in big.skipped} <= {"crowd", "below_min_area"}


# ------------------------------------------------------------------------------ clicks


def test_first_click_is_the_centre_of_a_square_and_the_first_ridge_pixel_of_a_rectangle():
    mask = np.zeros((40, 60), bool)
    mask[10:21, 30:41] = True  # 11 x 11 square, rows 10..20, columns 30..40
    assert first_click(mask) == Click(35, 15, True)
    mask = np.zeros((40, 60), bool)
    mask[10:21, 20:51] = True  # 11 rows x 31 columns: the middle row from x=25 to x=45 is
    # 6 px from the boundary; the first maximum in row-major order is its left end.
    assert first_click(mask) == Click(25, 15, True)


def test_first_click_counts_the_image_border_as_boundary():
    # A mask covering the whole image: without padding every pixel would be "infinitely" inside.
    mask = np.ones((9, 9), bool)
    assert first_click(mask) == Click(4, 4, True)
    # A band touching the left border (columns 0..11): columns 5 and 6 are 6 px from the
    # boundary (the border is 1 px left of column 0), rows 5 and below too; first is (5, 5).
    # Without the padding the click would sit on the border, at column 0.
    mask = np.zeros((21, 40), bool)
    mask[:, :12] = True
    assert first_click(mask) == Click(5, 5, True)


def test_first_click_of_an_l_shape_lies_in_the_thick_part_first_in_row_major_order():
    mask = np.zeros((60, 60), bool)
    mask[5:55, 5:17] = True     # vertical bar, 12 wide
    mask[39:55, 5:55] = True    # horizontal bar, 16 high: its centre row is farther from boundary
    click = first_click(mask)
    assert mask[click.y, click.x]
    dist = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2,
                                 cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    best = np.argwhere(dist == dist.max())  # row-major order
    assert (click.y, click.x) == tuple(best[0])
    assert 39 <= click.y < 55  # in the thicker, horizontal bar


def test_next_click_corrects_the_larger_error():
    gt = np.zeros((50, 50), bool)
    gt[10:40, 10:40] = True
    # Prediction misses a big part of the object (FN 30x15) and spills a little (FP 3x3).
    pred = np.zeros_like(gt)
    pred[10:40, 10:25] = True
    pred[0:3, 0:3] = True
    click = next_click(gt, pred)
    assert click.positive and gt[click.y, click.x] and not pred[click.y, click.x]
    assert 25 <= click.x < 40
    # Prediction covers the object and a big false-positive block: negative click in it.
    pred = gt.copy()
    pred[42:50, 0:50] = True
    click = next_click(gt, pred)
    assert not click.positive and pred[click.y, click.x] and not gt[click.y, click.x]
    # Exact prediction: nothing to click.
    assert next_click(gt, gt.copy()) is None


def test_next_click_tie_gives_the_negative_click():
    gt = np.zeros((20, 40), bool)
    gt[5:10, 5:10] = True            # FN: 5x5 block at the left (prediction misses it)
    pred = np.zeros_like(gt)
    pred[5:10, 25:30] = True         # FP: 5x5 block at the right, same depth
    assert next_click(gt, pred) == Click(27, 7, False)


# ------------------------------------------------------------------------------ metrics


def test_metrics_noc_and_breakdowns():
    assert mask_iou(np.array([[1, 1, 0]], bool), np.array([[0, 1, 1]], bool)) == pytest.approx(1 / 3)
    assert clicks_to_reach([0.5, 0.86, 0.95], 0.85) == 2
    assert clicks_to_reach([0.5, 0.86, 0.95], 0.90) == 3
    assert clicks_to_reach([0.5, 0.6, 0.7], 0.90) == 3
    results = [
        InstanceResult(1, 10, 1, "person", 500.0, (0.5, 0.86, 0.95)),   # small
        InstanceResult(1, 11, 1, "person", 5000.0, (0.9, 0.92, 0.93)),  # medium
        InstanceResult(2, 12, 3, "car", 20000.0, (0.1, 0.2, 0.3)),      # large, never reaches
    ]
    m = breakdown(results)
    assert m["overall"]["count"] == 3
    assert m["overall"]["miou"] == pytest.approx([1.5 / 3, 1.98 / 3, 2.18 / 3])
    assert m["overall"]["noc85"] == pytest.approx((2 + 1 + 3) / 3)
    assert m["overall"]["noc90"] == pytest.approx((3 + 1 + 3) / 3)
    assert m["overall"]["nof85"] == 1 and m["overall"]["nof90"] == 1
    assert [m["by_area"][a]["count"] for a in ("small", "medium", "large")] == [1, 1, 1]
    assert list(m["by_category"]) == ["person", "car"]
    assert m["by_category"]["person"]["miou"][0] == pytest.approx(0.7)


# ------------------------------------------------------------------------------ predictors


class OraclePredictor:
    """Returns the ground-truth mask of the prompted instance: images recognised by their
    pixels, instances by their box or by their first click. Counts set_image calls."""

    def __init__(self, dataset):
        self.by_image = {}
        self.set_image_calls = 0
        self.box_batches = []  # number of boxes in each batched predict call
        for entry, image, pairs in coco_lib.iter_images(dataset):
            self.by_image[hashlib.sha1(image.tobytes()).hexdigest()] = pairs
        self.pairs = None

    def set_image(self, image):
        self.set_image_calls += 1
        self.pairs = self.by_image[hashlib.sha1(image.tobytes()).hexdigest()]

    def predict(self, point_coords=None, point_labels=None, box=None, mask_input=None,
                multimask_output=True, return_logits=False):
        if box is not None and np.ndim(box) == 2:  # several boxes: outputs gain a leading axis
            self.box_batches.append(len(box))
            outs = [self.predict(box=b, multimask_output=multimask_output) for b in box]
            return tuple(np.stack(parts) for parts in zip(*outs))
        if box is not None:
            matches = [m for i, m in self.pairs if np.allclose(i.bbox_xyxy, box, atol=1e-3)]
        else:
            x, y = point_coords[0]
            matches = [m for _, m in self.pairs if first_click(m) == Click(int(x), int(y), True)]
        gt = matches[0]
        if not multimask_output:
            return gt[None], np.array([0.9]), np.zeros((1, 256, 256), np.float32)
        # The right mask is not first: the harness must keep the best predicted IoU.
        masks = np.stack([np.zeros_like(gt), gt, np.ones_like(gt)])
        return masks, np.array([0.2, 0.9, 0.5]), np.zeros((3, 256, 256), np.float32)


@pytest.mark.parametrize("prompt", ["box", "point", "clicks"])
def test_ground_truth_as_prediction_gives_miou_1_and_noc_1(coco_tiny, prompt):
    images_dir, annotations = coco_tiny
    dataset = coco_lib.load_coco_instances(annotations, images_dir, max_images=4)
    oracle = OraclePredictor(dataset)
    result = evaluate(oracle, dataset, prompt, 4 if prompt == "clicks" else None)
    n = sum(len(e.instances) for e in dataset.images)
    k = 4 if prompt == "clicks" else 1
    assert oracle.set_image_calls == len(dataset.images) == 4  # one embedding per image
    overall = result.metrics["overall"]
    assert overall["count"] == n == len(result.instances)
    assert overall["miou"] == [1.0] * k
    assert overall["noc85"] == 1.0 and overall["noc90"] == 1.0
    assert overall["nof85"] == 0 and overall["nof90"] == 0
    assert all(r.ious == (1.0,) * k for r in result.instances)
    if prompt == "box":  # an image's boxes in one call (groups of 1 go as [1, 4] too)
        assert sorted(oracle.box_batches) == sorted(len(e.instances) for e in dataset.images)


def test_box_prompts_go_in_groups_that_bound_the_masks_memory(coco_tiny, monkeypatch):
    from segapp.evaluation import runner

    images_dir, annotations = coco_tiny
    dataset = coco_lib.load_coco_instances(annotations, images_dir, max_images=4)
    monkeypatch.setattr(runner, "BOX_BATCH_MAX", 3)
    oracle = OraclePredictor(dataset)
    result = evaluate(oracle, dataset, "box")
    assert result.metrics["overall"]["miou"] == [1.0]
    assert max(oracle.box_batches) <= 3 and sum(oracle.box_batches) == len(result.instances)
    oracle = OraclePredictor(dataset)
    monkeypatch.setattr(runner, "BOX_BATCH_PIXELS", 1)  # an image's masks over budget: one box a call
    evaluate(oracle, dataset, "box")
    assert set(oracle.box_batches) == {1}


def test_baselines_take_a_batch_of_boxes_like_sam2(coco_tiny):
    images_dir, annotations = coco_tiny
    dataset = coco_lib.load_coco_instances(annotations, images_dir, max_images=1)
    entry, image, pairs = next(coco_lib.iter_images(dataset))
    boxes = np.array([inst.bbox_xyxy for inst, _ in pairs[:2]], dtype=np.float32)
    for predictor in (BoxBaseline(), GrabCutBaseline()):
        predictor.set_image(image)
        masks, ious, low = predictor.predict(box=boxes, multimask_output=False)
        assert masks.shape == (2, 1, *image.shape[:2]) and ious.shape == (2, 1) and low.shape == (2, 1, 256, 256)
        for i, box in enumerate(boxes):
            np.testing.assert_array_equal(predictor.predict(box=box, multimask_output=False)[0], masks[i])
        with pytest.raises(ValueError, match=r"box must have shape \[4\] or \[B, 4\]"):
            predictor.predict(box=np.zeros((2, 3)))


def _box_mask_independent(bbox_xywh, height, width):
    """Pixels whose centre lies inside the box, computed on a coordinate grid."""
    x, y, w, h = bbox_xywh
    cols = np.arange(width) + 0.5
    rows = np.arange(height) + 0.5
    inside_x = (cols >= x) & (cols <= x + w)
    inside_y = (rows >= y) & (rows <= y + h)
    return inside_y[:, None] & inside_x[None, :]


def test_box_baseline_miou_matches_an_independent_recomputation(coco_tiny, coco_api):
    images_dir, annotations = coco_tiny
    dataset = coco_lib.load_coco_instances(annotations, images_dir, max_images=12)
    result = evaluate(BoxBaseline(), dataset, "box")
    expected = {}
    for entry in dataset.images:
        for ann in coco_api.loadAnns(coco_api.getAnnIds(imgIds=entry.image_id, iscrowd=False)):
            gt = coco_api.annToMask(ann).astype(bool)
            box = _box_mask_independent(ann["bbox"], entry.height, entry.width)
            expected[ann["id"]] = (gt & box).sum() / (gt | box).sum()
    got = {r.annotation_id: r.ious[0] for r in result.instances}
    assert got.keys() == expected.keys()
    for ann_id, iou in expected.items():
        assert got[ann_id] == pytest.approx(iou, abs=1e-12)
    assert result.metrics["overall"]["miou"][0] == pytest.approx(np.mean(list(expected.values())))
    assert 0.3 < result.metrics["overall"]["miou"][0] < 0.9


def test_baselines_need_a_box_and_grabcut_is_deterministic_and_inside_the_box(coco_tiny):
    images_dir, annotations = coco_tiny
    dataset = coco_lib.load_coco_instances(annotations, images_dir, max_images=1)
    entry, image, pairs = next(coco_lib.iter_images(dataset))
    inst, gt = max(pairs, key=lambda p: p[1].sum())
    box = np.array(inst.bbox_xyxy)
    for predictor in (BoxBaseline(), GrabCutBaseline()):
        predictor.set_image(image)
        with pytest.raises(ValueError, match="needs a box prompt"):
            predictor.predict(point_coords=np.array([[10.0, 10.0]]), point_labels=np.array([1]))
        masks, scores, low_res = predictor.predict(box=box, multimask_output=True)
        assert masks.shape == (3, *gt.shape) and masks.dtype == bool
        assert scores.shape == (3,) and low_res.shape == (3, 256, 256)
    grabcut = GrabCutBaseline()
    grabcut.set_image(image)
    first = grabcut.predict(box=box, multimask_output=False)[0][0]
    cv2.randu(np.zeros(10), 0, 1)  # disturb OpenCV's random state between the two calls
    second = grabcut.predict(box=box, multimask_output=False)[0][0]
    np.testing.assert_array_equal(first, second)
    assert first.any()
    filled = _box_mask_independent((box[0], box[1], box[2] - box[0], box[3] - box[1]), *gt.shape)
    assert not (first & ~filled).any()  # GrabCut labels outside the box as background
    assert grabcut.fallbacks == 0
    # GrabCut follows the object better than the filled box on this (large) instance.
    assert mask_iou(first, gt) > mask_iou(filled, gt)


# ------------------------------------------------------------------------------ CLI


def _run_cli(capsys, *args):
    code = main(["eval", "coco", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_box_baseline_end_to_end(coco_tiny, tmp_path, capsys):
    images_dir, annotations = coco_tiny
    out = tmp_path / "out"
    code, stdout, _ = _run_cli(capsys, "--images", images_dir, "--annotations", annotations,
                               "--predictor", "box-baseline", "--max-images", 3, "--out", out,
                               "--no-progress")
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report) >= {"protocol", "dataset", "predictor", "versions", "metrics", "skipped"}
    assert report["protocol"]["prompt"] == "box" and report["protocol"]["num_clicks"] == 1
    assert report["protocol"]["max_images"] == 3
    assert report["predictor"]["name"] == "box-baseline" and report["predictor"]["checkpoint"] is None
    assert report["versions"]["pycocotools"] and report["versions"]["numpy"] == np.__version__
    assert report["dataset"]["images_evaluated"] == 3
    n = report["dataset"]["instances_evaluated"]
    metrics = report["metrics"]
    assert metrics["overall"]["count"] == n > 0
    assert sum(metrics["by_area"][a]["count"] for a in ("small", "medium", "large")) == n
    assert sum(c["count"] for c in metrics["by_category"].values()) == n
    with open(out / "per_instance.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == n
    assert list(rows[0]) == ["image_id", "annotation_id", "category_id", "category", "area",
                             "area_range", "iou_1"]
    assert np.mean([float(r["iou_1"]) for r in rows]) == pytest.approx(
        metrics["overall"]["miou"][0], abs=1e-6)
    plot = cv2.imread(str(out / "miou_vs_clicks.png"))
    assert plot is not None and plot.shape[0] > 100 and plot.shape[1] > 100
    assert "mIoU@1" in stdout and "all" in stdout
    # Deterministic: a second run writes the same report and rows.
    code2, _, _ = _run_cli(capsys, "--images", images_dir, "--annotations", annotations,
                           "--predictor", "box-baseline", "--max-images", 3, "--out",
                           tmp_path / "again", "--no-progress")
    assert code2 == 0
    assert (tmp_path / "again" / "per_instance.csv").read_text() == (out / "per_instance.csv").read_text()


def test_cli_usage_errors(coco_tiny, tmp_path, capsys, monkeypatch):
    images_dir, annotations = coco_tiny
    monkeypatch.chdir(tmp_path)  # no ./checkpoints: the official model is not downloaded
    monkeypatch.delenv("SEGAPP_CHECKPOINTS", raising=False)
    base = ["--images", images_dir, "--annotations", annotations, "--out", tmp_path]
    code, _, err = _run_cli(capsys, *base, "--model", "sam2.1_hiera_t")  # not downloaded
    assert code == 2
    assert "segapp download sam2.1_hiera_t" in err
    code, _, err = _run_cli(capsys, *base, "--model", "segapp_small", "--predictor", "grabcut")
    assert code == 2 and "not both" in err
    code, _, err = _run_cli(capsys, *base, "--predictor", "box-baseline", "--prompt", "clicks")
    assert code == 2 and "needs a box prompt" in err
    code, _, err = _run_cli(capsys, *base, "--predictor", "grabcut", "--clicks", "3")
    assert code == 2 and "--clicks applies to --prompt clicks" in err
    code, _, err = _run_cli(capsys, *base, "--checkpoint", tmp_path / "nope.pt")
    assert code == 2 and "checkpoint not found" in err
    code, _, err = _run_cli(capsys, "--images", tmp_path / "nodir", "--annotations", annotations,
                            "--predictor", "box-baseline")
    assert code == 2 and "image folder not found" in err
    assert not (tmp_path / "report.json").exists()


# ------------------------------------------------------------------------------ bad input


def _small_dataset(tmp_path, coco_tiny, n_images=3):
    """A copy of the first n images' annotations (with their image files) to break on purpose."""
    images_dir, annotations = coco_tiny
    data = json.loads(annotations.read_text())
    images = sorted(data["images"], key=lambda i: i["id"])[:n_images]
    ids = {i["id"] for i in images}
    anns = [a for a in data["annotations"] if a["image_id"] in ids]
    folder = tmp_path / "images"
    folder.mkdir()
    for img in images:
        shutil.copy(images_dir / img["file_name"], folder / img["file_name"])
    return folder, {"images": images, "annotations": anns, "categories": data["categories"]}


def test_malformed_annotation_file_gives_a_clear_error(tmp_path, coco_tiny, capsys):
    images_dir, _ = coco_tiny
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [], "annotations": [,]}')
    code, _, err = _run_cli(capsys, "--images", images_dir, "--annotations", bad,
                            "--predictor", "box-baseline", "--out", tmp_path / "o")
    assert code == 2 and "not valid JSON" in err and "line 1" in err
    bad.write_text('{"images": []}')
    code, _, err = _run_cli(capsys, "--images", images_dir, "--annotations", bad,
                            "--predictor", "box-baseline", "--out", tmp_path / "o")
    assert code == 2 and "no 'annotations' list" in err
    code, _, err = _run_cli(capsys, "--images", images_dir, "--annotations", tmp_path / "x.json",
                            "--predictor", "box-baseline", "--out", tmp_path / "o")
    assert code == 2 and "annotation file not found" in err


def test_bad_input_is_skipped_counted_and_listed(tmp_path, coco_tiny, capsys):
    folder, data = _small_dataset(tmp_path, coco_tiny)
    images = data["images"]
    anns = data["annotations"]
    # 1. an image whose file is missing
    (folder / images[0]["file_name"]).unlink()
    missing_ids = {a["id"] for a in anns if a["image_id"] == images[0]["id"] and not a["iscrowd"]}
    # 2. an annotation referencing an image that is not in the file
    template = next(a for a in anns if a["image_id"] == images[1]["id"])
    ghost = dict(template, id=999_000_001, image_id=123_456_789)
    # 3. a zero-area annotation (a degenerate polygon) and 4. one with no segmentation
    zero = dict(template, id=999_000_002, segmentation=[[10, 10, 10, 10, 10, 10]], area=0.0)
    broken = {k: v for k, v in template.items() if k != "segmentation"}
    broken["id"] = 999_000_003
    # 5. an unreadable image file
    (folder / images[2]["file_name"]).write_bytes(b"not a jpeg")
    unreadable_ids = {a["id"] for a in anns if a["image_id"] == images[2]["id"] and not a["iscrowd"]}
    data["annotations"] = anns + [ghost, zero, broken]
    ann_file = tmp_path / "ann.json"
    ann_file.write_text(json.dumps(data))

    out = tmp_path / "out"
    code, _, _ = _run_cli(capsys, "--images", folder, "--annotations", ann_file, "--predictor",
                          "box-baseline", "--min-area", 0, "--out", out, "--no-progress")
    assert code == 1  # evaluated, but part of the dataset was unusable
    report = json.loads((out / "report.json").read_text())
    skipped = report["skipped"]
    by_reason = {}
    for s in skipped["instances"]:
        by_reason.setdefault(s["reason"], set()).add(s["annotation_id"])
    assert by_reason["missing_image_file"] == missing_ids
    assert by_reason["unknown_image_id"] == {999_000_001}
    assert by_reason["empty_mask"] == {999_000_002}
    assert by_reason["malformed_annotation"] == {999_000_003}
    assert by_reason["unreadable_image"] == unreadable_ids
    assert skipped["counts"] == {k: len(v) for k, v in sorted(by_reason.items())}
    assert skipped["total"] == len(skipped["instances"])
    n_image1 = sum(1 for a in anns if a["image_id"] == images[1]["id"] and not a["iscrowd"])
    assert report["dataset"]["instances_evaluated"] == n_image1 > 0
    assert report["dataset"]["images_evaluated"] == 1
    with open(out / "per_instance.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == n_image1
    # Only protocol exclusions (crowd, empty masks): exit 0.
    ok = dict(data, annotations=[a for a in anns if a["image_id"] == images[1]["id"]] + [zero])
    ann_file.write_text(json.dumps(ok))
    code, _, err = _run_cli(capsys, "--images", folder, "--annotations", ann_file, "--predictor",
                            "box-baseline", "--out", tmp_path / "ok", "--no-progress")
    assert code == 0
    report = json.loads((tmp_path / "ok" / "report.json").read_text())
    assert report["skipped"]["counts"]["empty_mask"] == 1


def test_invalid_bboxes_and_polygons_are_skipped_and_the_good_instances_evaluated(tmp_path, coco_tiny,
                                                                                  capsys, caplog):
    # One NaN, negative-width or out-of-image bbox used to stop the whole run with a traceback,
    # and a polygon with 1e12 coordinates crashed the process inside pycocotools.
    folder, data = _small_dataset(tmp_path, coco_tiny, n_images=1)
    image = data["images"][0]
    good = [a for a in data["annotations"] if not a["iscrowd"]]
    template = good[0]
    w, h = image["width"], image["height"]
    bad_boxes = {
        999_000_011: [float("nan"), 10, 20, 20],
        999_000_012: [10, 10, -5, 20],
        999_000_013: [w + 100, 10, 20, 20],
        999_000_014: [10, 10, 20, float("inf")],
    }
    bad_polygons = {
        999_000_021: [[1e12, 1, 2, 1e12, 5, 5]],
        999_000_022: [[10, 10, float("nan"), 20, 30, 30]],
        999_000_023: [[10, 10, "x", 20, 30, 30]],
        999_000_024: [[10, 10, 20, 20, 30, 10], [-3 * w, 5, 6, 7, 8, 9]],  # one bad part of two
    }
    extra = [dict(template, id=i, bbox=b) for i, b in bad_boxes.items()]
    extra += [dict(template, id=i, segmentation=s) for i, s in bad_polygons.items()]
    # Still fine: a bbox overhanging by under a pixel, a polygon vertex a little off the image.
    ok_box = dict(template, id=999_000_031, bbox=[0, 0, w + 0.5, h])
    ok_poly = dict(template, id=999_000_032, segmentation=[[-20, -20, 50, 10, 10, 50]])
    data["annotations"] = data["annotations"] + extra + [ok_box, ok_poly]
    ann_file = tmp_path / "ann.json"
    ann_file.write_text(json.dumps(data))  # NaN/Infinity as Python's json writes them

    out = tmp_path / "out"
    code, _, _ = _run_cli(capsys, "--images", folder, "--annotations", ann_file, "--predictor",
                          "box-baseline", "--out", out, "--no-progress")
    assert code == 1  # the run completes; the broken annotations make it exit 1
    assert "8 instances could not be evaluated because of bad input" in caplog.text
    assert "skipped 4 instance(s): invalid bbox" in caplog.text
    report = json.loads((out / "report.json").read_text())
    by_reason = {}
    for s in report["skipped"]["instances"]:
        by_reason.setdefault(s["reason"], {})[s["annotation_id"]] = s["detail"]
    assert set(by_reason["invalid_bbox"]) == set(bad_boxes)
    assert set(by_reason["invalid_polygon"]) == set(bad_polygons)
    assert report["skipped"]["counts"]["invalid_bbox"] == 4
    assert report["skipped"]["counts"]["invalid_polygon"] == 4
    details = {**by_reason["invalid_bbox"], **by_reason["invalid_polygon"]}
    assert "NaN or infinite" in details[999_000_011]
    assert "bbox [10, 10, -5, 20] has a negative width or height" in details[999_000_012]
    assert f"lies outside the {w}x{h} image" in details[999_000_013]
    assert "far outside" in details[999_000_021] and "1000000000000" in details[999_000_021]
    assert "NaN or infinite" in details[999_000_022]
    assert "not numbers" in details[999_000_023]
    assert "far outside" in details[999_000_024]
    evaluated = report["dataset"]["instances_evaluated"]
    assert evaluated == len(good) + 2
    with open(out / "per_instance.csv", newline="") as f:
        ids = {int(r["annotation_id"]) for r in csv.DictReader(f)}
    assert ids == {a["id"] for a in good} | {999_000_031, 999_000_032}


def test_polygons_are_checked_before_pycocotools_sees_them():
    with pytest.raises(coco_lib.InvalidPolygonError, match="far outside"):
        coco_lib.decode_segmentation([[0, 0, 1e12, 0, 5, 5]], 10, 10)
    with pytest.raises(coco_lib.InvalidPolygonError, match="NaN"):
        coco_lib.decode_segmentation([[0, 0, np.inf, 0, 5, 5]], 10, 10)
    # Within one image side of the image: rasterised and clipped, as pycocotools does.
    mask = coco_lib.decode_segmentation([[-10, -10, 20, -10, 20, 20, -10, 20]], 10, 10)
    assert mask.all()
    assert coco_lib.bbox_problem((0, 0, 10.5, 10), 10, 10) is None
    assert "outside" in coco_lib.bbox_problem((0, 0, 12, 10), 10, 10)


def test_all_images_missing_is_a_clear_error(tmp_path, coco_tiny, capsys):
    _, annotations = coco_tiny
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = _run_cli(capsys, "--images", empty, "--annotations", annotations,
                            "--predictor", "box-baseline", "--out", tmp_path / "o")
    assert code == 1
    assert "image files are missing" in err and "right folder" in err


class SquaresPredictor:
    """A stand-in model: the mask is 7x7 squares around positive clicks minus those around
    negative ones; records every call so the click loop's prompts can be checked."""

    def __init__(self):
        self.calls = []

    def set_image(self, image):
        self.shape = image.shape[:2]

    def predict(self, point_coords=None, point_labels=None, box=None, mask_input=None,
                multimask_output=True, return_logits=False):
        mask = np.zeros(self.shape, bool)
        for (x, y), label in zip(point_coords.astype(int), point_labels):
            if label == 1:
                mask[max(y - 3, 0):y + 4, max(x - 3, 0):x + 4] = True
        for (x, y), label in zip(point_coords.astype(int), point_labels):
            if label == 0:
                mask[max(y - 3, 0):y + 4, max(x - 3, 0):x + 4] = False
        n = 3 if multimask_output else 1
        low_res = np.full((n, 256, 256), float(len(self.calls)), np.float32)
        low_res += np.arange(n, dtype=np.float32)[:, None, None] / 10
        self.calls.append(dict(points=point_coords.copy(), labels=point_labels.copy(),
                               mask_input=None if mask_input is None else mask_input.copy(),
                               multimask=multimask_output))
        scores = np.array([0.1, 0.8, 0.3])[:n]
        return np.repeat(mask[None], n, axis=0), scores, low_res


def test_click_loop_accumulates_clicks_and_feeds_back_the_chosen_logits():
    from segapp.evaluation.runner import evaluate_instance

    gt = np.zeros((60, 80), bool)
    gt[10:50, 10:70] = True
    predictor = SquaresPredictor()
    predictor.set_image(np.zeros((60, 80, 3), np.uint8))
    ious = evaluate_instance(predictor, gt, (10, 10, 70, 50), "clicks", num_clicks=4)
    assert len(ious) == 4 and ious == sorted(ious) and ious[-1] > ious[0]
    calls = predictor.calls
    assert [c["multimask"] for c in calls] == [True, False, False, False]
    assert calls[0]["mask_input"] is None
    assert calls[0]["points"].tolist() == [[first_click(gt).x, first_click(gt).y]]
    # Click 2 gets the logits of the mask chosen at click 1 (index 1: best predicted IoU).
    np.testing.assert_array_equal(calls[1]["mask_input"], np.full((1, 256, 256), 0.1, np.float32))
    for k in range(1, 4):
        assert len(calls[k]["points"]) == k + 1 and list(calls[k]["labels"][:1]) == [1]
        np.testing.assert_array_equal(calls[k]["points"][:k], calls[k - 1]["points"])
    np.testing.assert_array_equal(calls[2]["mask_input"], np.full((1, 256, 256), 1.0, np.float32))
    # `point` is click 1 alone.
    assert evaluate_instance(predictor, gt, (10, 10, 70, 50), "point") == ious[:1]
    # An exact mask ends the loop: no more predictions, IoU 1 carried to K.
    square = np.zeros((60, 80), bool)
    square[20:27, 30:37] = True
    predictor.calls.clear()
    assert evaluate_instance(predictor, square, (30, 20, 37, 27), "clicks", 5) == [1.0] * 5
    assert len(predictor.calls) == 1


def test_image_size_differing_from_the_annotations_is_skipped(coco_tiny):
    images_dir, annotations = coco_tiny
    dataset = coco_lib.load_coco_instances(annotations, images_dir, max_images=2)
    wrong = dataset.images[0]
    dataset.images[0] = coco_lib.ImageEntry(wrong.image_id, wrong.file_name, wrong.height + 1,
                                            wrong.width, wrong.path, wrong.instances)
    skipped = []
    yielded = [entry.image_id for entry, _, _ in coco_lib.iter_images(dataset, skipped)]
    assert yielded == [dataset.images[1].image_id]
    assert [s.reason for s in skipped] == ["image_size_mismatch"] * len(wrong.instances)
    assert "the annotations say" in skipped[0].detail
