"""`segapp segment --track-everything` and `segapp segment --stream SOURCE` end to end on the
tiny random-weights model: outputs as segment writes them for videos, the stream's masks equal
to the offline run's, bad sources refused with a message naming them."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from segapp.batch.outputs import read_id_png
from segapp.cli import main

TINY = ["--model", "test_tiny", "--no-progress"]
EVERYTHING = ["--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-score-thresh", "0"]
H, W = 48, 64


def write_video(path: Path, n: int) -> Path:
    import cv2

    rng = np.random.default_rng(0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (W, H))
    for t in range(n):
        img = rng.integers(0, 60, (H, W, 3), dtype=np.uint8)
        img[10:30, 5 + t: 25 + t] = (40, 40, 220)
        writer.write(img)
    writer.release()
    return path


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def test_track_everything_writes_every_frame_with_stable_16_bit_ids(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    write_video(src / "clip.avi", 7)
    out = tmp_path / "out"
    assert main(["segment", str(src), "--out", str(out), "--track-everything", "3", *TINY, *EVERYTHING]) == 0
    [record] = manifest(out)
    assert record["status"] == "ok" and record["masks"] > 0
    pngs = sorted(o for o in record["outputs"] if o.endswith(".png"))
    assert pngs == [f"clip/{t:06d}.png" for t in range(7)]
    with Image.open(out / pngs[0]) as im:
        assert im.mode.startswith("I;16")  # ids are never reused: one 16-bit depth for every frame
    first_ids = set(np.unique(read_id_png(out / pngs[0])).tolist()) - {0}
    assert first_ids and min(first_ids) == 1
    results = json.loads((out / "coco_results.json").read_text())
    assert {r["instance_id"] for r in results} >= first_ids
    assert json.loads((out / ".segapp" / "run.json").read_text())["track_everything"] == 3


def test_stream_of_a_file_equals_the_offline_video_run(tmp_path):
    video = write_video(tmp_path / "clip.avi", 18)
    offline, streamed = tmp_path / "offline", tmp_path / "streamed"
    assert main(["segment", str(video), "--out", str(offline), *TINY, *EVERYTHING]) == 0
    rc = main(["segment", "--stream", str(video), "--stream-idle-timeout", "0", "--out", str(streamed),
               "--format", "png,coco,overlay", *TINY, *EVERYTHING])
    assert rc == 0
    [record] = manifest(streamed)
    assert record["input"] == "clip" and record["status"] == "ok"
    assert "clip.overlay.mp4" in record["outputs"] and (streamed / "clip.overlay.mp4").stat().st_size > 0
    objects = 0
    for t in range(18):
        a = read_id_png(offline / "clip" / f"{t:06d}.png")
        b = read_id_png(streamed / "clip" / f"{t:06d}.png")
        np.testing.assert_array_equal(a.astype(np.int64), b.astype(np.int64), err_msg=f"frame {t}")
        objects += len(np.unique(b)) - 1
    assert objects > 18  # objects were found and tracked
    assert not (streamed / "clip" / "000018.png").exists()
    images = json.loads((streamed / "coco_images.json").read_text())["images"]
    assert sorted(i["frame_index"] for i in images) == list(range(18))


def test_stream_max_frames(tmp_path):
    video = write_video(tmp_path / "cam.avi", 10)
    out = tmp_path / "out"
    assert main(["segment", "--stream", str(video), "--max-frames", "4", "--stream-idle-timeout", "0",
                 "--out", str(out), *TINY, *EVERYTHING]) == 0
    assert sorted(p.name for p in (out / "cam").iterdir()) == [f"{t:06d}.png" for t in range(4)]


def test_bad_stream_sources(tmp_path, capsys):
    out = str(tmp_path / "out")
    cases = [
        (["--stream", str(tmp_path / "missing.mp4")], 2, "no such file, and not a camera index or a URL"),
        (["--stream", "ftp://example.org/x.mp4"], 2, "unsupported URL scheme"),
        (["--stream", "0", str(tmp_path)], 2, "either INPUT files or --stream"),
        (["--stream", "0", "--prompts", str(tmp_path / "p.json")], 2, "without --prompts"),
        (["--stream", "0", "--max-frames", "0"], 2, "--max-frames must be at least 1"),
        ([], 2, "give INPUT files or folders to segment, or --stream SOURCE"),
        (["--stream", "57"], 1, "cannot open the stream 57 (camera)"),
    ]
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00not a video" * 50)
    cases.append((["--stream", str(garbage), "--stream-idle-timeout", "0"], 1, "garbage.mp4"))
    for args, code, message in cases:
        assert main(["segment", *args, "--out", out, *TINY]) == code, args
        captured = capsys.readouterr()
        assert message in captured.out + captured.err, (args, captured)


def test_a_growing_file_is_read_as_it_grows(tmp_path):
    """An AVI being written: the reader meets its end, waits, re-opens it and reads on."""
    import threading
    import time

    import cv2

    from segapp.batch.stream import FrameReader

    full = tmp_path / "full.avi"
    writer = cv2.VideoWriter(str(full), cv2.VideoWriter_fourcc(*"MJPG"), 10, (W, H))
    for t in range(30):
        writer.write(np.full((H, W, 3), 8 * t, np.uint8))
    writer.release()
    data = full.read_bytes()
    growing = tmp_path / "growing.avi"
    growing.write_bytes(data[: len(data) // 2])

    def grow():
        time.sleep(0.5)
        growing.write_bytes(data)

    thread = threading.Thread(target=grow)
    thread.start()
    reader = FrameReader(str(growing), idle_timeout=3.0)
    values = [round(float(frame[0, 0, 0]) / 8) for frame in reader]
    thread.join()
    reader.close()
    assert values == list(range(30))
