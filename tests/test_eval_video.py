"""`segapp eval video`: J and F against hand-computed values, DAVIS statistics, label masks,
dataset checks, the first-mask baseline and a model through the CLI, bad input.

Synthetic DAVIS folders are written per test; real data (../shared/data/davis2016) is used by
one CLI test of the baseline.
"""
from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from segapp.cli import main
from segapp.evaluation import davis as davis_lib
from segapp.evaluation.boundary import (boundary_f, boundary_map, boundary_precision_recall,
                                        tolerance_radius)
from segapp.formats.label_masks import LabelMaskError, read_label_mask
from segapp.evaluation.metrics import mask_iou
from segapp.evaluation.davis import load_davis
from segapp.evaluation.video import FirstMaskTracker, PredictorTracker, evaluate_video, summary_stats



def square(top: int, left: int, side: int = 20, size: int = 100) -> np.ndarray:
    m = np.zeros((size, size), bool)
    m[top:top + side, left:left + side] = True
    return m


def band(left: int, width: int = 20, size: int = 100) -> np.ndarray:
    """A full-height vertical band of columns left .. left + width - 1."""
    m = np.zeros((size, size), bool)
    m[:, left:left + width] = True
    return m


# ------------------------------------------------------------------------------ J and F


def test_identical_masks_score_1():
    gt = square(20, 20)
    assert mask_iou(gt, gt) == 1.0 and boundary_f(gt, gt) == 1.0


def test_shifted_square_by_hand():
    # 100x100 image: radius ceil(0.008 * 141.4) = 2. A 20x20 square's boundary map holds 80
    # pixels: the background column left of it and row above it (21 + 20), its own right
    # column and bottom row (20 + 19). Shifted 5 pixels right, 40 of the 80 predicted boundary
    # pixels lie within 2 pixels of the true boundary (6 of the left side, 17 of the top, none
    # of the right, 17 of the bottom) and 40 of the 80 true ones within 2 of the predicted
    # (none of the left, 18 of the top, 5 of the right, 17 of the bottom).
    gt, pred = square(20, 20), square(20, 25)
    assert tolerance_radius(100, 100) == 2
    assert np.count_nonzero(boundary_map(gt)) == 80
    assert mask_iou(pred, gt) == pytest.approx(300 / 500)
    assert boundary_precision_recall(pred, gt) == (0.5, 0.5)
    assert boundary_f(pred, gt) == 0.5


def test_boundary_map_follows_seg2bmap():
    # Background pixels above and left of the region, the region's own bottom and right pixels.
    m = np.zeros((5, 5), bool)
    m[1:3, 1:3] = True
    expected = np.array([[1, 1, 1, 0, 0],
                         [1, 0, 1, 0, 0],
                         [1, 1, 1, 0, 0],
                         [0, 0, 0, 0, 0],
                         [0, 0, 0, 0, 0]], bool)
    np.testing.assert_array_equal(boundary_map(m), expected)
    # The image border is not a boundary: a full mask has none, a band touching the border
    # only its two sides.
    assert not boundary_map(np.ones((6, 7), bool)).any()
    cols = np.flatnonzero(boundary_map(band(40)).any(axis=0))
    assert cols.tolist() == [39, 59] and boundary_map(band(40)).sum() == 200


@pytest.mark.parametrize("shift, expected_f", [(1, 1.0), (2, 1.0), (3, 0.0), (5, 0.0)])
def test_shifted_band_is_matched_up_to_the_radius(shift, expected_f):
    gt, pred = band(40), band(40 + shift)
    assert boundary_f(pred, gt) == expected_f
    assert mask_iou(pred, gt) == pytest.approx((20 - shift) / (20 + shift))


def test_one_of_two_objects_found():
    gt = band(10) | band(60)
    pred = band(10)  # every predicted boundary pixel matches (P = 1), half the true ones (R = 1/2)
    assert boundary_precision_recall(pred, gt) == (1.0, 0.5)
    assert boundary_f(pred, gt) == pytest.approx(2 / 3)
    assert mask_iou(pred, gt) == pytest.approx(0.5)


def test_empty_cases_follow_davis():
    empty, gt = np.zeros((100, 100), bool), square(20, 20)
    assert (mask_iou(empty, empty), boundary_f(empty, empty)) == (1.0, 1.0)
    assert boundary_precision_recall(empty, gt) == (1.0, 0.0)
    assert (mask_iou(empty, gt), boundary_f(empty, gt)) == (0.0, 0.0)
    assert boundary_precision_recall(gt, empty) == (0.0, 1.0)
    assert (mask_iou(gt, empty), boundary_f(gt, empty)) == (0.0, 0.0)


def test_tolerance_radius_davis_480p():
    assert tolerance_radius(480, 854) == 8  # ceil(0.008 * 979.6)
    assert tolerance_radius(480, 854, bound_th=3) == 3  # >= 1: pixels


def test_summary_stats_mean_recall_decay():
    # 8 frames: bins (DAVIS edges 0, 2, 4, 5, 7) are frames 0-2, 2-4, 4-5, 5-7.
    s = summary_stats([1, 1, 1, 1, 0, 0, 0, 0])
    assert s == {"mean": 0.5, "recall": 0.5, "decay": 1.0}
    s = summary_stats([0.2, 0.6, 0.6, 0.4, 0.5, 0.9, 0.9, 0.3])
    assert s["recall"] == 0.5 and s["decay"] == pytest.approx(np.mean([0.2, 0.6, 0.6]) - np.mean([0.9, 0.9, 0.3]))


# ------------------------------------------------------------------------------ label masks


def save_palette(path, ids: np.ndarray) -> None:
    image = Image.fromarray(ids.astype(np.uint8), mode="P")
    image.putpalette([0, 0, 0, 200, 0, 0, 0, 200, 0] + [128] * (256 * 3 - 9))
    image.save(path)


def test_label_masks_palette_binary_and_bad(tmp_path):
    ids = np.zeros((10, 12), np.uint8)
    ids[1:4, 1:4], ids[5:8, 5:9], ids[0, :] = 1, 2, 255
    save_palette(tmp_path / "p.png", ids)
    read = read_label_mask(tmp_path / "p.png")
    assert read[1, 1] == 1 and read[6, 6] == 2 and (read[0] == 0).all()  # 255 = void -> 0
    Image.fromarray((square(2, 2, 3, 10) * 255).astype(np.uint8)).save(tmp_path / "b.png")
    np.testing.assert_array_equal(read_label_mask(tmp_path / "b.png"), square(2, 2, 3, 10))
    gray = np.zeros((10, 10), np.uint8)
    gray[2:4, 2:4] = 128
    Image.fromarray(gray).save(tmp_path / "g.png")
    with pytest.raises(LabelMaskError, match=r"g\.png has values 0, 128"):
        read_label_mask(tmp_path / "g.png")
    colour = np.zeros((10, 10, 3), np.uint8)
    colour[2:4, 2:4] = (255, 0, 0)
    Image.fromarray(colour).save(tmp_path / "c.png")
    with pytest.raises(LabelMaskError, match=r"c\.png is a colour"):
        read_label_mask(tmp_path / "c.png")


# ------------------------------------------------------------------------------ datasets


def write_sequence(root, name: str, masks: list[np.ndarray], palette: bool = True,
                   frame_size: tuple[int, int] | None = None) -> None:
    """JPEG frames (a grey image with the objects drawn) and PNG masks 00000.. of a sequence."""
    (root / "JPEGImages" / name).mkdir(parents=True)
    (root / "Annotations" / name).mkdir(parents=True)
    for t, ids in enumerate(masks):
        h, w = frame_size or ids.shape
        frame = np.full((h, w, 3), 90, np.uint8)
        frame[: ids.shape[0], : ids.shape[1]][ids > 0] = (230, 120, 40)
        Image.fromarray(frame).save(root / "JPEGImages" / name / f"{t:05d}.jpg")
        path = root / "Annotations" / name / f"{t:05d}.png"
        if palette:
            save_palette(path, ids)
        else:
            Image.fromarray(((ids > 0) * 255).astype(np.uint8)).save(path)


def two_object_masks(n: int = 5) -> list[np.ndarray]:
    """Object 1 a static square, object 2 a full-height band moving 5 pixels right per frame."""
    out = []
    for t in range(n):
        ids = np.zeros((100, 100), np.uint8)
        ids[square(10, 5)] = 1
        ids[band(40 + 5 * t)] = 2
        out.append(ids)
    return out


@pytest.fixture
def davis(tmp_path):
    root = tmp_path / "davis"
    write_sequence(root, "moving", two_object_masks())
    write_sequence(root, "still", [square(30, 30).astype(np.uint8)] * 4, palette=False)
    return root


# The first-mask baseline on `davis`, by hand. Frames 1 .. n-2 are measured. "moving": object 1
# static (J = F = 1); object 2 shifted 5t pixels on frame t = 1..3: J = (20 - 5t) / (20 + 5t),
# F = 0 (every shift beyond the 2-pixel radius). "still" (0/255 masks): J = F = 1.
BAND_J = np.mean([15 / 25, 10 / 30, 5 / 35])
EXPECTED = {"moving": {"J": (1 + BAND_J) / 2, "F": 0.5, "objects": 2, "frames": 3},
            "still": {"J": 1.0, "F": 1.0, "objects": 1, "frames": 2}}
OVERALL_J, OVERALL_F = (1 + BAND_J + 1) / 3, (1 + 0 + 1) / 3  # means over the 3 objects


def test_first_mask_baseline_by_hand(davis):
    dataset = load_davis(davis)
    assert [s.name for s in dataset.sequences] == ["moving", "still"]
    assert dataset.sequences[0].object_ids == (1, 2) and dataset.sequences[1].object_ids == (1,)
    result = evaluate_video(FirstMaskTracker(), dataset, "mask")
    m = result.metrics
    for name, exp in EXPECTED.items():
        s = m["by_sequence"][name]
        assert (s["objects"], s["frames"]) == (exp["objects"], exp["frames"])
        assert s["J"] == pytest.approx(exp["J"]) and s["F"] == pytest.approx(exp["F"])
        assert s["J&F"] == pytest.approx((exp["J"] + exp["F"]) / 2)
    assert m["by_object"]["moving/2"]["J"] == pytest.approx(BAND_J)
    assert m["by_object"]["moving/2"]["J_recall"] == pytest.approx(1 / 3)  # only 0.6 > 0.5
    assert m["overall"]["J"] == pytest.approx(OVERALL_J)
    assert m["overall"]["F"] == pytest.approx(OVERALL_F)
    assert m["overall"]["J&F"] == pytest.approx((OVERALL_J + OVERALL_F) / 2)
    assert (m["overall"]["objects"], m["overall"]["sequences"]) == (3, 2)


class OraclePredictor:
    """SAM2VideoPredictor interface returning the ground truth shifted by `shift` columns, to
    check the tracker plumbing (prompts on frame 0, logits -> masks, object ids)."""

    def __init__(self, root, shift: int = 0):
        self.root, self.shift, self.calls = root, shift, []

    def init_state(self, frames_dir):
        self.calls.append(("init_state", frames_dir))
        return {"dir": frames_dir, "objects": []}

    def add_new_mask(self, state, frame_idx, obj_id, mask):
        self.calls.append(("mask", frame_idx, obj_id, mask.shape))
        state["objects"].append(obj_id)

    def add_new_points_or_box(self, state, frame_idx, obj_id, points=None, labels=None, box=None):
        self.calls.append(("box" if box is not None else "points", frame_idx, obj_id,
                           None if box is None else [float(v) for v in box]))
        state["objects"].append(obj_id)

    def propagate_in_video(self, state):
        from pathlib import Path

        name = Path(state["dir"]).name
        masks = sorted((self.root / "Annotations" / name).glob("*.png"))
        for t, path in enumerate(masks):
            ids = np.roll(read_label_mask(path), self.shift, axis=1)
            logits = torch.stack([torch.from_numpy(np.where(ids == o, 5.0, -5.0))
                                  for o in state["objects"]])[:, None]
            yield t, list(state["objects"]), logits


def test_predictor_tracker_prompts_and_masks(davis):
    dataset = load_davis(davis, ["moving"])
    oracle = OraclePredictor(davis)
    result = evaluate_video(PredictorTracker(oracle), dataset, "mask")
    assert result.metrics["overall"]["J&F"] == 1.0
    assert oracle.calls[0] == ("init_state", str(davis / "JPEGImages" / "moving"))
    assert oracle.calls[1:] == [("mask", 0, 1, (100, 100)), ("mask", 0, 2, (100, 100))]
    oracle.calls.clear()
    evaluate_video(PredictorTracker(oracle), dataset, "box")
    # boxes on pixel edges: object 1 rows 10..29, cols 5..24; object 2 the band at cols 40..59
    assert oracle.calls[1:] == [("box", 0, 1, [5, 10, 25, 30]), ("box", 0, 2, [40, 0, 60, 100])]
    oracle.calls.clear()
    evaluate_video(PredictorTracker(oracle), dataset, "point")
    assert [c[0] for c in oracle.calls[1:]] == ["points", "points"]
    # a prediction 1 pixel off: J below 1, F still 1 (within the radius)
    shifted = evaluate_video(PredictorTracker(OraclePredictor(davis, shift=1)), dataset, "mask")
    assert shifted.metrics["by_object"]["moving/1"]["F"] == 1.0
    assert shifted.metrics["by_object"]["moving/1"]["J"] == pytest.approx(19 / 21)


# ------------------------------------------------------------------------------ bad input


def test_dataset_checks_name_the_file(tmp_path):
    root = tmp_path / "d"
    write_sequence(root, "ok", [square(30, 30).astype(np.uint8)] * 3)
    write_sequence(root, "fewer_masks", [square(30, 30).astype(np.uint8)] * 3)
    (root / "Annotations" / "fewer_masks" / "00002.png").unlink()
    write_sequence(root, "no_annotations", [square(30, 30).astype(np.uint8)] * 3)
    for p in (root / "Annotations" / "no_annotations").iterdir():
        p.unlink()
    (root / "Annotations" / "no_annotations").rmdir()
    write_sequence(root, "sizes", [square(30, 30).astype(np.uint8)] * 3, frame_size=(100, 120))
    write_sequence(root, "unreadable", [square(30, 30).astype(np.uint8)] * 3)
    (root / "JPEGImages" / "unreadable" / "00001.jpg").write_bytes(b"not a jpeg")
    write_sequence(root, "badmask", [square(30, 30).astype(np.uint8)] * 3, palette=False)
    Image.fromarray(np.full((100, 100), 7, np.uint8)).save(root / "Annotations" / "badmask" / "00001.png")
    dataset = load_davis(root)
    assert [s.name for s in dataset.sequences] == ["ok"]
    reasons = {s.sequence: (s.reason, s.detail) for s in dataset.skipped}
    assert reasons["fewer_masks"][0] == "frames_and_masks_differ"
    assert "frames without a mask: 00002.jpg" in reasons["fewer_masks"][1]
    assert reasons["no_annotations"][0] == "missing_annotations"
    assert str(root / "Annotations" / "no_annotations") in reasons["no_annotations"][1]
    assert reasons["sizes"][0] == "size_mismatch" and "00000.jpg is 120x100" in reasons["sizes"][1]
    assert reasons["unreadable"][0] == "unreadable_frame" and "00001.jpg" in reasons["unreadable"][1]
    assert reasons["badmask"][0] == "bad_mask" and "00001.png has values 7" in reasons["badmask"][1]
    with pytest.raises(davis_lib.VideoDatasetError, match="no sequence nope"):
        load_davis(root, ["ok", "nope"])
    with pytest.raises(davis_lib.VideoDatasetError, match="no JPEGImages"):
        load_davis(tmp_path)


# ------------------------------------------------------------------------------ CLI


def _run(capsys, *args):
    code = main(["eval", "video", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_first_mask_outputs(davis, tmp_path, capsys):
    out = tmp_path / "out"
    seq_file = tmp_path / "seqs.txt"
    seq_file.write_text("# the two\nmoving\nstill\n")
    code, stdout, _ = _run(capsys, "--videos", davis, "--sequences", seq_file, "--predictor",
                           "first-mask", "--out", out, "--no-progress")
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["protocol"]["prompt"] == "mask" and report["protocol"]["sequences"] == ["moving", "still"]
    assert report["protocol"]["boundary_radius_px"] == {"moving": 2, "still": 2}
    assert report["predictor"]["name"] == "first-mask"
    assert report["metrics"]["overall"]["J&F"] == pytest.approx((OVERALL_J + OVERALL_F) / 2)
    assert report["dataset"]["objects_evaluated"] == 3 and report["skipped"]["total"] == 0
    with open(out / "per_sequence.csv", newline="") as f:
        rows = {r["sequence"]: r for r in csv.DictReader(f)}
    assert float(rows["moving"]["J"]) == pytest.approx(EXPECTED["moving"]["J"], abs=1e-6)
    assert rows["still"]["J&F"] == "1.000000" and rows["still"]["frames"] == "2"
    with open(out / "per_object.csv", newline="") as f:
        objects = list(csv.DictReader(f))
    assert [(r["sequence"], r["object_id"]) for r in objects] == [("moving", "1"), ("moving", "2"), ("still", "1")]
    plot = cv2.imread(str(out / "jf_per_sequence.png"))
    assert plot is not None and plot.shape[0] > 100
    assert "overall" in stdout and "J&F" in stdout
    # only some sequences
    code, _, _ = _run(capsys, "--videos", davis, "--sequences", "still", "--predictor",
                      "first-mask", "--out", tmp_path / "o2", "--no-progress")
    assert code == 0
    assert json.loads((tmp_path / "o2" / "report.json").read_text())["metrics"]["overall"]["J&F"] == 1.0


def test_cli_model_test_tiny_all_prompts(davis, tmp_path, capsys):
    for prompt in ("mask", "box", "point"):
        out = tmp_path / prompt
        code, stdout, _ = _run(capsys, "--videos", davis, "--model", "test_tiny", "--device", "cpu",
                               "--prompt", prompt, "--out", out, "--no-progress")
        assert code == 0, prompt
        assert "model: test_tiny (random weights" in stdout
        report = json.loads((out / "report.json").read_text())
        assert report["predictor"]["name"] == "segapp.VideoPredictor"
        assert report["predictor"]["model"] == "test_tiny"
        assert report["dataset"]["objects_evaluated"] == 3
        overall = report["metrics"]["overall"]
        assert 0.0 <= overall["J"] <= 1.0 and 0.0 <= overall["F"] <= 1.0
        assert set(report["seconds"]["by_sequence"]) == {"moving", "still"}


def test_cli_bundled_model_tracks_and_image_only_weights_are_refused(davis, tmp_path, capsys, monkeypatch):
    """No download: the default is the bundled model, whose memory is trained (version 2.1);
    weights whose memory was never trained are refused before any work, naming the baseline."""
    import shutil

    from segapp import bundled

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SEGAPP_CHECKPOINTS", raising=False)
    code, out, err = _run(capsys, "--videos", davis, "--out", tmp_path / "o", "--no-progress")
    assert code == 0, err
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["predictor"]["model"] == "segapp_small" and report["dataset"]["objects_evaluated"] == 3
    assert 0.0 <= report["metrics"]["overall"]["J"] <= 1.0

    image_only = shutil.copy(bundled.checkpoint(), tmp_path / "image_only.safetensors")
    bundled.add_metadata(image_only, {"trained_parts": "image_encoder,prompt_encoder,mask_decoder,no_mem_embed"})
    code, _, err = _run(capsys, "--videos", davis, "--model", "segapp_small", "--checkpoint", image_only,
                        "--out", tmp_path / "o2")
    assert code == 2
    assert "is trained for images only; video tracking needs an official checkpoint" in err
    assert "--predictor first-mask" in err
    assert not (tmp_path / "o2" / "report.json").exists()


def test_cli_usage_errors(davis, tmp_path, capsys):
    code, _, err = _run(capsys, "--videos", davis, "--predictor", "first-mask", "--prompt", "box")
    assert code == 2 and "needs --prompt mask" in err
    code, _, err = _run(capsys, "--videos", davis, "--predictor", "first-mask", "--model", "test_tiny")
    assert code == 2 and "not both" in err
    code, _, err = _run(capsys, "--videos", tmp_path / "nowhere", "--predictor", "first-mask")
    assert code == 2 and "video folder not found" in err
    code, _, err = _run(capsys, "--videos", tmp_path, "--predictor", "first-mask")
    assert code == 2 and "no JPEGImages" in err
    code, _, err = _run(capsys, "--videos", davis, "--sequences", "moving,zzz", "--predictor", "first-mask")
    assert code == 2 and "no sequence zzz" in err and "moving, still" in err


def test_cli_bad_sequence_is_reported_and_exits_1(davis, tmp_path, capsys, caplog):
    (davis / "Annotations" / "still" / "00003.png").unlink()
    out = tmp_path / "out"
    code, _, _ = _run(capsys, "--videos", davis, "--predictor", "first-mask", "--out", out, "--no-progress")
    assert code == 1
    report = json.loads((out / "report.json").read_text())
    assert report["dataset"]["sequences_evaluated"] == 1
    assert report["skipped"]["counts"] == {"frames_and_masks_differ": 1}
    assert "frames without a mask: 00003.jpg" in report["skipped"]["sequences"][0]["detail"]
    assert "frames without a mask: 00003.jpg" in caplog.text


def test_cli_first_mask_on_davis2016(shared_data, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, _ = _run(capsys, "--videos", shared_data / "davis2016", "--sequences", "dog-agility",
                      "--predictor", "first-mask", "--out", out, "--no-progress")
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["protocol"]["boundary_radius_px"] == {"dog-agility": 8}
    s = report["metrics"]["by_sequence"]["dog-agility"]
    assert (s["objects"], s["frames"]) == (1, 11)  # 13 frames, first and last not measured
    # the dog runs across the frame: the copied first mask scores low
    assert s["J&F"] == pytest.approx(0.1190, abs=1e-4)
