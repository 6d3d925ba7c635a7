"""Tracking outputs of videos (`segapp segment --format mot,mots,ytvis`): the files parsed back
agree with the instance-id PNGs frame by frame (pycocotools decodes each RLE to exactly the
PNG's pixels of that id, MOT boxes bound them), frames are numbered from 1 in the text files,
and the same files come from a video, a stream and a resumed run."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from segapp.batch.inputs import image_id
from segapp.batch.outputs import Segmentation, object_masks, read_id_png
from segapp.batch.tracks import TrackOutputs
from segapp.cli import main
from test_segment_stream import write_video as stream_video

TINY = ["--model", "test_tiny", "--no-progress"]
EVERYTHING = ["--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-score-thresh", "0"]
H, W = 48, 64
FRAMES = 7


def write_video(path: Path, n: int = FRAMES) -> Path:
    """test_segment_stream's moving red square clip, FRAMES frames unless told."""
    return stream_video(path, n)


def decode(rle: dict) -> np.ndarray:
    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")}).astype(bool)


def read_mot(path: Path) -> dict[int, dict[int, tuple]]:
    """frame (as written, 1-based) -> id -> (left, top, width, height, conf)."""
    out: dict[int, dict[int, tuple]] = {}
    for line in path.read_text().splitlines():
        f = line.split(",")
        assert len(f) == 10 and f[7:] == ["-1", "-1", "-1"], line
        out.setdefault(int(f[0]), {})[int(f[1])] = (int(f[2]), int(f[3]), int(f[4]), int(f[5]), float(f[6]))
    return out


def read_mots(path: Path) -> dict[int, dict[int, tuple]]:
    """frame (1-based) -> id -> (class_id, mask), as the MOTS Challenge tools read it."""
    out: dict[int, dict[int, tuple]] = {}
    for line in path.read_text().splitlines():
        frame, obj, cls, h, w, counts = line.split(" ")
        mask = decode({"size": [int(h), int(w)], "counts": counts})
        out.setdefault(int(frame), {})[int(obj)] = (int(cls), mask)
    return out


def bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


# ---------------------------------------------------------------------------- the collector
def seg_of(id_map: np.ndarray, ids: list[int], category: int = 1) -> Segmentation:
    return Segmentation(id_map, [{"instance_id": i, "score": 0.75, "category_id": category} for i in ids])


def test_track_outputs_of_given_frames():
    a = np.zeros((H, W), np.uint16)
    a[2:6, 3:10] = 4
    a[20:30, 40:50] = 9
    b = np.zeros((H, W), np.uint16)
    b[3:7, 4:11] = 4  # object 9 is gone (listed, but no pixel); object 4 moved
    tracks = TrackOutputs(("png", "mot", "mots", "ytvis"))
    tracks.add(0, (H, W), object_masks(seg_of(a, [4, 9], category=3)))
    tracks.add(1, (H, W), object_masks(seg_of(b, [4, 9], category=3)))
    assert tracks.mot_text().decode().splitlines() == [
        "1,4,3,2,7,4,0.75,-1,-1,-1", "1,9,40,20,10,10,0.75,-1,-1,-1", "2,4,4,3,7,4,0.75,-1,-1,-1"]
    mots = [line.split(" ") for line in tracks.mots_text().decode().splitlines()]
    assert [m[:5] for m in mots] == [["1", "4", "3", str(H), str(W)], ["1", "9", "3", str(H), str(W)],
                                     ["2", "4", "3", str(H), str(W)]]
    np.testing.assert_array_equal(decode({"size": [H, W], "counts": mots[2][5]}), b == 4)
    fragment = tracks.ytvis(video_id=17, file_name="v/clip.mp4")
    assert fragment["video"] == {"id": 17, "file_name": "v/clip.mp4", "height": H, "width": W, "length": 2}
    [four, nine] = fragment["results"]
    assert (four["instance_id"], four["video_id"], four["category_id"], four["score"]) == (4, 17, 3, 0.75)
    np.testing.assert_array_equal(decode(four["segmentations"][0]), a == 4)
    np.testing.assert_array_equal(decode(four["segmentations"][1]), b == 4)
    assert nine["instance_id"] == 9 and nine["segmentations"][1] is None
    with pytest.raises(ValueError, match="frames must come in order"):
        tracks.add(1, (H, W), [])


# ---------------------------------------------------------------------------- segment end to end
def check_against_pngs(out: Path, stem: str, rel: str, frames: int) -> set[int]:
    """Every tracking output agrees with the PNGs; returns the ids seen."""
    mot = read_mot(out / f"{stem}.mot.txt")
    mots = read_mots(out / f"{stem}.mots.txt")
    results = json.loads((out / "ytvis_results.json").read_text())
    videos = json.loads((out / "ytvis_videos.json").read_text())
    [video] = videos["videos"]
    assert video == {"id": image_id(rel), "file_name": rel, "height": H, "width": W, "length": frames}
    assert videos["categories"] == [{"id": 1, "name": "object"}]
    tracks = {r["instance_id"]: r for r in results}
    assert len(tracks) == len(results) and all(r["video_id"] == video["id"] for r in results)
    assert all(len(r["segmentations"]) == frames for r in results)
    assert min(mot) >= 1 and max(mot) <= frames  # 1-based
    seen: set[int] = set()
    for t in range(frames):
        id_map = read_id_png(out / stem / f"{t:06d}.png")
        ids = set(np.unique(id_map).tolist()) - {0}
        seen |= ids
        assert set(mot.get(t + 1, {})) == ids and set(mots.get(t + 1, {})) == ids, f"frame {t}"
        for obj_id in ids:
            assert mot[t + 1][obj_id][:4] == bbox(id_map == obj_id)
            cls, mask = mots[t + 1][obj_id]
            assert cls == 1
            np.testing.assert_array_equal(mask, id_map == obj_id)
            np.testing.assert_array_equal(decode(tracks[obj_id]["segmentations"][t]), id_map == obj_id)
        for obj_id, track in tracks.items():
            if obj_id not in ids:
                assert track["segmentations"][t] is None
    assert set(tracks) == seen
    return seen


def test_track_everything_writes_mot_mots_ytvis_matching_the_pngs(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    write_video(src / "clip.avi")
    out = tmp_path / "out"
    command = ["segment", str(src), "--out", str(out), "--track-everything", "3",
               "--format", "png,mot,mots,ytvis", *TINY, *EVERYTHING]
    assert main(command) == 0
    [record] = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert record["status"] == "ok"
    assert {"clip.mot.txt", "clip.mots.txt"} <= set(record["outputs"])
    ids = check_against_pngs(out, "clip", "clip.avi", FRAMES)
    assert ids and min(ids) == 1
    written = {name: (out / name).read_bytes() for name in ("clip.mot.txt", "clip.mots.txt", "ytvis_results.json")}
    # resumed: nothing recomputed, the same files; a lost fragment makes the video be redone
    assert main(command) == 0
    assert all((out / name).read_bytes() == data for name, data in written.items())
    (out / ".segapp" / "ytvis" / next(p.name for p in (out / ".segapp" / "ytvis").iterdir())).unlink()
    assert main(command) == 0
    assert all((out / name).read_bytes() == data for name, data in written.items())


def test_stream_writes_the_same_tracking_outputs_as_the_video(tmp_path):
    video = write_video(tmp_path / "clip.avi")
    offline, streamed = tmp_path / "offline", tmp_path / "streamed"
    formats = ["--format", "png,mot,mots,ytvis"]
    assert main(["segment", str(video), "--out", str(offline), *formats, *TINY, *EVERYTHING]) == 0
    assert main(["segment", "--stream", str(video), "--stream-idle-timeout", "0", "--out", str(streamed),
                 *formats, *TINY, *EVERYTHING]) == 0
    assert check_against_pngs(streamed, "clip", "clip", FRAMES)
    for name in ("clip.mot.txt", "clip.mots.txt"):
        assert (streamed / name).read_text() == (offline / name).read_text()
    strip = lambda rs: [{k: v for k, v in r.items() if k != "video_id"} for r in rs]  # noqa: E731
    assert strip(json.loads((streamed / "ytvis_results.json").read_text())) == \
        strip(json.loads((offline / "ytvis_results.json").read_text()))


def test_images_get_no_tracking_outputs_and_an_images_only_run_is_refused(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)).save(src / "a.png")
    rc = main(["segment", str(src), "--out", str(tmp_path / "out"), "--format", "png,mot,ytvis", *TINY])
    assert rc == 2
    assert "--format mot,ytvis: tracking outputs are written for videos, and none of the 1 inputs is a video" \
        in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    write_video(src / "clip.avi", 3)
    out = tmp_path / "mixed"
    assert main(["segment", str(src), "--out", str(out), "--format", "png,mot", *TINY, *EVERYTHING]) == 0
    assert sorted(p.name for p in out.glob("*.txt")) == ["clip.mot.txt"]


def test_stream_with_mot_only_counts_its_frames(tmp_path, capsys):
    video = write_video(tmp_path / "cam.avi")
    out = tmp_path / "out"
    assert main(["segment", "--stream", str(video), "--stream-idle-timeout", "0", "--out", str(out),
                 "--format", "mot", *TINY, *EVERYTHING]) == 0
    assert f"segment --stream: cam: ok, {FRAMES} frames," in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["cam.mot.txt", "manifest.jsonl"]
    assert max(read_mot(out / "cam.mot.txt")) == FRAMES
