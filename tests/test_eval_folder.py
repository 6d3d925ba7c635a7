"""`segapp eval folder`: img/ + gt/ interactive benchmarks (masks matched by file stem), the
same prompts, metrics and outputs as `segapp eval coco`; numbers checked by hand on synthetic
folders."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from segapp.cli import main
from segapp.evaluation import folder as folder_lib

H, W = 60, 80


def save_palette(path, ids: np.ndarray) -> None:
    image = Image.fromarray(ids.astype(np.uint8), mode="P")
    image.putpalette([0, 0, 0, 200, 0, 0, 0, 200, 0] + [128] * (256 * 3 - 9))
    image.save(path)


def image_with(ids: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 50, (*ids.shape, 3), dtype=np.uint8)
    img[ids > 0] = (230, 120, 40)
    return img


@pytest.fixture
def bench(tmp_path):
    """img/a.jpg + gt/a.png: palette, object 1 a 10x20 rectangle, object 2 an L shape (filled
    box 20x20 = 400 pixels, L = 400 - 10x10 = 300 pixels); img/b.png + gt/b.png: a 0/255 mask
    of one 30x40 rectangle."""
    img, gt = tmp_path / "img", tmp_path / "gt"
    img.mkdir()
    gt.mkdir()
    a = np.zeros((H, W), np.uint8)
    a[5:15, 5:25] = 1
    a[30:50, 40:60] = 2
    a[30:40, 50:60] = 0
    save_palette(gt / "a.png", a)
    Image.fromarray(image_with(a)).save(img / "a.jpg", quality=95)
    b = np.zeros((H, W), np.uint8)
    b[10:40, 20:60] = 255
    Image.fromarray(b).save(gt / "b.png")
    Image.fromarray(image_with(b)).save(img / "b.png")
    return img, gt


def _run(capsys, *args):
    code = main(["eval", "folder", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_loading_matches_by_stem_and_reads_instances(bench):
    dataset = folder_lib.load_folder(*bench)
    assert [e.file_name for e in dataset.images] == ["a.jpg", "b.png"]
    a, b = dataset.images
    assert [(i.annotation_id, i.area, i.bbox_xyxy) for i in a.instances] == [
        (1, 200.0, (5.0, 5.0, 25.0, 15.0)), (2, 300.0, (40.0, 30.0, 60.0, 50.0))]
    assert [(i.annotation_id, i.area) for i in b.instances] == [(1, 1200.0)]
    assert dataset.skipped == []


def test_cli_box_baseline_by_hand(bench, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, _ = _run(capsys, "--images", bench[0], "--masks", bench[1], "--predictor",
                           "box-baseline", "--out", out, "--no-progress")
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    # The filled box is exact for the rectangles (IoU 1) and gives 300 / 400 for the L.
    assert report["metrics"]["overall"]["miou"][0] == pytest.approx((1 + 0.75 + 1) / 3)
    assert report["metrics"]["overall"]["count"] == 3
    assert report["metrics"]["by_area"]["small"]["count"] == 2  # 200 and 300 pixels < 32²
    assert report["dataset"]["images_dir"] == str(bench[0])
    assert report["dataset"]["masks_dir"] == str(bench[1])
    assert "pixel edges" in report["protocol"]["rules"]["box"]
    assert "file stem" in report["protocol"]["rules"]["instances"]
    with open(out / "per_instance.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["file_name"], r["annotation_id"], r["iou_1"]) for r in rows] == [
        ("a.jpg", "1", "1.000000"), ("a.jpg", "2", "0.750000"), ("b.png", "1", "1.000000")]
    assert (out / "miou_vs_clicks.png").is_file() and "mIoU@1" in stdout


def test_cli_clicks_default_to_20(bench, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, _ = _run(capsys, "--images", bench[0], "--masks", bench[1], "--model", "test_tiny",
                           "--device", "cpu", "--prompt", "clicks", "--max-images", "1",
                           "--out", out, "--no-progress")
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["protocol"]["num_clicks"] == 20 and report["protocol"]["max_images"] == 1
    overall = report["metrics"]["overall"]
    assert overall["count"] == 2 and len(overall["miou"]) == 20
    assert 1 <= overall["noc85"] <= 20 and 1 <= overall["noc90"] <= 20
    with open(out / "per_instance.csv", newline="") as f:
        assert list(csv.DictReader(f))[0].keys() >= {"iou_1", "iou_20"}
    assert "NoC@85" in stdout


def test_bad_input_is_skipped_named_and_exits_1(bench, tmp_path, capsys):
    img, gt = bench
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(img / "c.jpg")  # no mask
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(img / "d.jpg")
    Image.fromarray(np.full((H, W), 7, np.uint8)).save(gt / "d.png")  # neither 0/255 nor palette
    Image.fromarray(np.zeros((H, W + 1), np.uint8)).save(gt / "e.png")  # no image
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(img / "f.jpg")
    Image.fromarray(np.zeros((H + 2, W), np.uint8)).save(gt / "f.png")  # size differs
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(img / "g.jpg")
    Image.fromarray(np.zeros((H, W), np.uint8)).save(gt / "g.png")  # no object
    out = tmp_path / "out"
    code, _, _ = _run(capsys, "--images", img, "--masks", gt, "--predictor", "box-baseline",
                      "--out", out, "--no-progress")
    assert code == 1
    report = json.loads((out / "report.json").read_text())
    assert report["metrics"]["overall"]["count"] == 3  # a and b still evaluated
    details = {s["reason"]: s["detail"] for s in report["skipped"]["instances"]}
    assert set(details) == {"missing_mask_file", "malformed_annotation", "missing_image_file",
                            "image_size_mismatch", "empty_mask"}
    assert "c.jpg has no mask c.*" in details["missing_mask_file"]
    assert "d.png has values 7" in details["malformed_annotation"]
    assert "e.png has no image e.*" in details["missing_image_file"]
    assert "f.png is 80x62, image f.jpg is 80x60" in details["image_size_mismatch"]


def test_usage_errors(bench, tmp_path, capsys):
    img, gt = bench
    code, _, err = _run(capsys, "--images", img, "--masks", tmp_path / "none", "--predictor", "grabcut")
    assert code == 2 and "mask folder not found" in err
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(img / "a.png")
    code, _, err = _run(capsys, "--images", img, "--masks", gt, "--predictor", "grabcut")
    assert code == 2 and "two image files named a" in err
    code, _, err = _run(capsys, "--images", img, "--masks", gt, "--predictor", "grabcut",
                        "--prompt", "clicks")
    assert code == 2 and "needs a box prompt" in err
