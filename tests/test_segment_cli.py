"""`segapp segment` end to end on the tiny random-weights model: images, prompts files, COCO
boxes, segment everything, videos, bad files and usage errors."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from segapp.batch.outputs import read_id_png
from segapp.cli import main

TINY = ["--model", "test_tiny", "--no-progress"]
EVERYTHING = ["--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-score-thresh", "0"]


def make_images(folder: Path, names, size=(72, 96), seed=0) -> None:
    import cv2

    rng = np.random.default_rng(seed)
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        img = (rng.random((*size, 3)) * 80).astype(np.uint8)
        cv2.rectangle(img, (10, 10), (50, 45), (250, 120, 30), -1)
        cv2.imwrite(str(path), img)


def manifest(out: Path) -> dict[str, dict]:
    lines = (out / "manifest.jsonl").read_text().splitlines()
    return {r["input"]: r for r in map(json.loads, lines)}


def check_coco_matches_pngs(out: Path, gt_file: Path | None = None) -> int:
    """COCO results load with pycocotools' loadRes and every mask equals its PNG's pixels."""
    from pycocotools.coco import COCO

    gt = COCO(str(gt_file or out / "coco_images.json"))
    res = gt.loadRes(str(out / "coco_results.json"))
    images = {i["id"]: i for i in json.loads((out / "coco_images.json").read_text())["images"]}
    records = {r["input"]: r for r in manifest(out).values()}
    checked = 0
    for ann in res.loadAnns(res.getAnnIds()):
        img = images[ann["image_id"]]
        png = next(o for o in records[img["file_name"]]["outputs"]
                   if o.endswith(".png") and ("frame_index" not in img or o.endswith(f"{img['frame_index']:06d}.png")))
        id_map = read_id_png(out / png)
        np.testing.assert_array_equal(res.annToMask(ann).astype(bool), id_map == ann["instance_id"])
        checked += 1
    return checked


def test_prompted_images_write_pngs_coco_overlays_and_manifest(tmp_path):
    src = tmp_path / "in"
    make_images(src, ["a.png", "sub/b.jpg", "sub/c.bmp"])
    prompts = {"images": {
        "a.png": [{"box": [10, 10, 50, 45]}, {"id": 4, "points": [[80, 60]], "labels": [1]}],
        "sub/b.jpg": [{"id": 2, "points": [[20, 20], [70, 60]], "labels": [1, 0], "box": [5, 5, 60, 50]}],
        "c.bmp": [{"points": [[30, 30]], "labels": [1]}, {"points": [[5, 5], [90, 5]], "labels": [1, 1]}],
    }}
    (tmp_path / "p.json").write_text(json.dumps(prompts))
    out = tmp_path / "out"
    rc = main(["segment", str(src), "--out", str(out), "--prompts", str(tmp_path / "p.json"),
               "--format", "png,coco,overlay", "--batch-size", "2", *TINY])
    assert rc == 0
    records = manifest(out)
    assert set(records) == {"a.png", "sub/b.jpg", "sub/c.bmp"}
    assert all(r["status"] == "ok" and r["error"] is None and r["seconds"] >= 0 for r in records.values())
    assert records["sub/b.jpg"]["outputs"] == ["sub/b.png", "sub/b.overlay.jpg"]
    expected_ids = {"a.png": {1, 4}, "sub/b.png": {2}, "sub/c.png": {1, 2}}
    for png, ids in expected_ids.items():
        id_map = read_id_png(out / png)
        assert id_map.shape == (72, 96)
        assert set(np.unique(id_map).tolist()) - {0} <= ids
    results = json.loads((out / "coco_results.json").read_text())
    assert sorted(r["instance_id"] for r in results) == [1, 1, 2, 2, 4]
    assert check_coco_matches_pngs(out) == 5
    from PIL import Image

    with Image.open(out / "a.overlay.jpg") as im:
        assert im.format == "JPEG" and im.size == (96, 72)


def test_coco_annotation_boxes_on_real_images(tmp_path, shared_data):
    ann_file = shared_data / "coco_tiny" / "annotations" / "instances_val2017.json"
    coco = json.loads(ann_file.read_text())
    counts = {}
    for a in coco["annotations"]:
        if not a.get("iscrowd"):
            counts[a["image_id"]] = counts.get(a["image_id"], 0) + 1
    chosen = [img for img in coco["images"] if 0 < counts.get(img["id"], 0) <= 6][:2]
    src = tmp_path / "val"
    src.mkdir()
    for img in chosen:
        shutil.copy(shared_data / "coco_tiny" / "val2017" / img["file_name"], src / img["file_name"])
    out = tmp_path / "out"
    rc = main(["segment", str(src), "--out", str(out), "--prompts", str(ann_file), *TINY])
    assert rc == 0
    results = json.loads((out / "coco_results.json").read_text())
    assert {r["image_id"] for r in results} == {img["id"] for img in chosen}  # the file's own ids
    assert len(results) == sum(counts[img["id"]] for img in chosen)
    by_image = {}
    for a in sorted(coco["annotations"], key=lambda a: a["id"]):
        if not a.get("iscrowd"):
            by_image.setdefault(a["image_id"], []).append(a["category_id"])
    for img in chosen:
        got = [r["category_id"] for r in sorted(results, key=lambda r: r["instance_id"])
               if r["image_id"] == img["id"]]
        assert got == by_image[img["id"]]
    # Loadable against the annotation file itself, ready for COCOeval.
    assert check_coco_matches_pngs(out, gt_file=ann_file) == len(results)


def test_segment_everything_on_images(tmp_path):
    src = tmp_path / "in"
    make_images(src, ["x.png", "y.png"], size=(64, 64))
    out = tmp_path / "out"
    assert main(["segment", str(src), "--out", str(out), *TINY, *EVERYTHING]) == 0
    assert check_coco_matches_pngs(out) > 0
    results = json.loads((out / "coco_results.json").read_text())
    for name in ("x.png", "y.png"):
        ids = sorted(r["instance_id"] for r in results if r["image_id"] == _image_id(out, name))
        id_map = read_id_png(out / name)
        assert ids == sorted(set(np.unique(id_map).tolist()) - {0})


def _image_id(out: Path, name: str) -> int:
    images = json.loads((out / "coco_images.json").read_text())["images"]
    return next(i["id"] for i in images if i["file_name"] == name)


def test_bad_files_are_reported_and_never_stop_the_run(tmp_path, capsys):
    src = tmp_path / "in"
    make_images(src, ["good1.png", "z/good2.jpg"])
    (src / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    (src / "empty.png").write_bytes(b"")
    (src / "readme.txt").write_text("hello")
    (src / "clip.mp4").write_bytes(b"\x00" * 64)
    out = tmp_path / "out"
    rc = main(["segment", str(src), "--out", str(out), "--batch-size", "3", *TINY, *EVERYTHING])
    assert rc == 1
    records = manifest(out)
    failed = {k for k, r in records.items() if r["status"] == "failed"}
    assert failed == {"corrupt.jpg", "empty.png", "readme.txt", "clip.mp4"}
    assert all(records[k]["error"] and records[k]["outputs"] == [] for k in failed)
    assert "unsupported" in records["readme.txt"]["error"]
    assert records["good1.png"]["status"] == records["z/good2.jpg"]["status"] == "ok"
    assert (out / "good1.png").is_file() and (out / "z" / "good2.png").is_file()
    printed = capsys.readouterr().out
    assert "4 failed" in printed and "corrupt.jpg" in printed and "readme.txt" in printed


def test_inputs_without_prompts_are_skipped(tmp_path):
    src = tmp_path / "in"
    make_images(src, ["a.png", "b.png"])
    (tmp_path / "p.json").write_text(json.dumps({"images": {"a.png": [{"box": [0, 0, 20, 20]}]}}))
    out = tmp_path / "out"
    assert main(["segment", str(src), "--out", str(out), "--prompts", str(tmp_path / "p.json"), *TINY]) == 0
    records = manifest(out)
    assert records["a.png"]["status"] == "ok"
    assert records["b.png"]["status"] == "skipped" and "no prompts" in records["b.png"]["error"]
    assert not (out / "b.png").exists()


@pytest.mark.parametrize("extra, message", [
    (["--format", "png,gif"], "unknown output"),
    (["--batch-size", "0"], "--batch-size"),
    (["--prompts", "{tmp}/missing.json"], "cannot read prompts file"),
    (["--prompts", "{tmp}/bad.json"], "x1 < x0"),
    (["--ray-actors", "2"], "--engine ray"),
])
def test_usage_errors_exit_2(tmp_path, capsys, extra, message):
    src = tmp_path / "in"
    make_images(src, ["a.png"])
    (tmp_path / "bad.json").write_text(json.dumps({"images": {"a.png": [{"box": [9, 9, 1, 1]}]}}))
    extra = [e.replace("{tmp}", str(tmp_path)) for e in extra]
    assert main(["segment", str(src), "--out", str(tmp_path / "out"), *TINY, *extra]) == 2
    assert message in capsys.readouterr().err


def test_missing_inputs_and_checkpoint_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SEGAPP_CHECKPOINTS", raising=False)
    assert main(["segment", "nowhere", "--out", "out", *TINY]) == 2
    assert "input not found: nowhere" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["segment", "empty", "--out", "out", *TINY]) == 2
    assert "no input files" in capsys.readouterr().err
    make_images(tmp_path / "in", ["a.png"])
    assert main(["segment", "in", "--out", "out", "--no-progress", "--model", "sam2.1_hiera_t"]) == 2
    assert "segapp download sam2.1_hiera_t" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # argparse: --out is required
        main(["segment", "in"])
    assert exc.value.code == 2


def make_video(path: Path, frames: int = 5) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (80, 64))
    for t in range(frames):
        frame = np.full((64, 80, 3), 30, np.uint8)
        cv2.rectangle(frame, (10 + 4 * t, 15), (35 + 4 * t, 45), (0, 200, 255), -1)
        writer.write(frame)
    writer.release()


def test_video_with_prompts_on_frame_zero(tmp_path):
    pytest.importorskip("segapp.video.predictor", reason="the video predictor has not landed")
    import cv2

    src = tmp_path / "in"
    make_video(src / "clip.mp4")
    (tmp_path / "p.json").write_text(json.dumps({"videos": {"clip.mp4": {"0": [
        {"id": 3, "box": [10, 15, 35, 45]}, {"id": 300, "points": [[60, 55]], "labels": [1]}]}}}))
    out = tmp_path / "out"
    rc = main(["segment", str(src), "--out", str(out), "--prompts", str(tmp_path / "p.json"),
               "--format", "png,coco,overlay", *TINY])
    assert rc == 0
    record = manifest(out)["clip.mp4"]
    assert record["outputs"] == [f"clip/{i:06d}.png" for i in range(5)] + ["clip.overlay.mp4"]
    for i in range(5):
        path = out / "clip" / f"{i:06d}.png"
        assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).dtype == np.uint16  # id 300: every frame 16-bit
        assert set(np.unique(read_id_png(path)).tolist()) <= {0, 3, 300}
    images = json.loads((out / "coco_images.json").read_text())["images"]
    assert sorted(i["frame_index"] for i in images) == list(range(5))
    assert check_coco_matches_pngs(out) == 10  # two objects on each of five frames
    av = pytest.importorskip("av")
    with av.open(str(out / "clip.overlay.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert sum(1 for _ in container.decode(stream)) == 5


def test_long_video_prompted_midway_with_overlay_tracks_both_ways_and_finishes(tmp_path):
    """Prompts on frame 10 of 40: tracked back to frame 0 and on to the end; the overlay MP4 is
    drawn on the frames the tracker decoded (one decoder for both, read by two threads: this
    run used to wait forever on a lost frame request)."""
    import threading

    av = pytest.importorskip("av")
    src = tmp_path / "in"
    make_video(src / "clip.mp4", frames=40)
    (tmp_path / "p.json").write_text(json.dumps({"videos": {"clip.mp4": {"10": [{"id": 3, "box": [50, 15, 75, 45]}]}}}))
    out = tmp_path / "out"
    result = []
    run = threading.Thread(target=lambda: result.append(main([
        "segment", str(src), "--out", str(out), "--prompts", str(tmp_path / "p.json"), "--format", "png,overlay",
        *TINY])), daemon=True)
    run.start()
    run.join(timeout=300)
    assert not run.is_alive(), "segment did not finish"
    assert result == [0]
    record = manifest(out)["clip.mp4"]
    assert record["outputs"] == [f"clip/{i:06d}.png" for i in range(40)] + ["clip.overlay.mp4"]
    assert all(read_id_png(out / "clip" / f"{i:06d}.png").any() for i in range(40))  # frames 0-9 tracked back
    with av.open(str(out / "clip.overlay.mp4")) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])]
    assert len(frames) == 40 and frames[0].shape == (64, 80, 3)
    import cv2

    from segapp.batch.outputs import overlay

    cap = cv2.VideoCapture(str(src / "clip.mp4"))
    video = [cap.read()[1][..., ::-1].astype(np.int16) for _ in range(40)]
    cap.release()

    def diff(t: int, u: int) -> float:  # overlay frame t against frame t's masks drawn on video frame u
        expected = overlay(np.ascontiguousarray(video[u].astype(np.uint8)), read_id_png(out / "clip" / f"{t:06d}.png"))
        return float(np.abs(frames[t].astype(np.int16) - expected).mean())

    assert all(diff(t, t) < 6 for t in (0, 10, 39))  # drawn on its own frame (H.264 is lossy)
    assert all(diff(t, t) < diff(t, u) for t, u in ((0, 12), (12, 0), (10, 3)))


def test_video_bf16_attention_option(tmp_path):
    """--bf16-attention reaches the video predictor and tracks the same objects."""
    pytest.importorskip("segapp.video.predictor", reason="the video predictor has not landed")
    import torch

    from segapp.batch.config import ModelSpec, Options
    from segapp.batch.segmenter import Segmenter

    src = tmp_path / "in"
    make_video(src / "clip.mp4")
    (tmp_path / "p.json").write_text(json.dumps({"videos": {"clip.mp4": {"0": [
        {"id": 3, "box": [10, 15, 35, 45]}]}}}))
    ids = {}
    for flag in ([], ["--bf16-attention"]):
        out = tmp_path / ("out" + "".join(flag))
        assert main(["segment", str(src), "--out", str(out), "--prompts", str(tmp_path / "p.json"), *flag, *TINY]) == 0
        ids[bool(flag)] = [set(np.unique(read_id_png(out / "clip" / f"{i:06d}.png")).tolist()) for i in range(5)]
    assert ids[True] == ids[False]
    seg = Segmenter(ModelSpec("test_tiny", None, "cpu"), Options(bf16_attention=True), None)
    assert seg.video_predictor.attention_dtype == torch.bfloat16


@pytest.mark.slow
def test_video_without_prompts_tracks_first_frame_objects(tmp_path):
    """Segment everything on frame 0, then track those objects: ids on later frames come from frame 0."""
    pytest.importorskip("segapp.video.predictor", reason="the video predictor has not landed")
    src = tmp_path / "in"
    make_video(src / "v" / "clip.mp4", frames=3)
    out = tmp_path / "out"
    assert main(["segment", str(src), "--out", str(out), *TINY, *EVERYTHING]) == 0
    record = manifest(out)["v/clip.mp4"]
    assert record["outputs"] == [f"v/clip/{i:06d}.png" for i in range(3)]
    first = set(np.unique(read_id_png(out / "v" / "clip" / "000000.png")).tolist()) - {0}
    assert first
    for i in (1, 2):
        assert set(np.unique(read_id_png(out / "v" / "clip" / f"{i:06d}.png")).tolist()) - {0} <= first
    assert check_coco_matches_pngs(out) > 0
