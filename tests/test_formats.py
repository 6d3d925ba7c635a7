"""segapp.formats: the one implementation of each conversion, and the entry points that share it."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from segapp.formats import media

TINY = ["--model", "test_tiny", "--no-progress"]


def write_webm(path: Path, frames: int = 3, hw: tuple[int, int] = (64, 80)) -> Path:
    """A small VP9 WebM: a bright box moving right over a dark background."""
    av = pytest.importorskip("av")
    if "libvpx-vp9" not in av.codecs_available:
        pytest.skip("this PyAV build has no VP9 encoder")
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libvpx-vp9", rate=10)
        stream.height, stream.width = hw
        stream.pix_fmt = "yuv420p"
        for t in range(frames):
            frame = np.full((*hw, 3), 30, np.uint8)
            frame[15:45, 10 + 4 * t:35 + 4 * t] = (250, 200, 0)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


# ---------------------------------------------------------------------------- media table
def test_media_table_classifies_by_extension_case_insensitively():
    assert media.kind_of("a/b.JPG") == "image" and media.kind_of("x.webp") == "image"
    for suffix in media.VIDEO_SUFFIXES:
        assert media.kind_of(f"clip{suffix.upper()}") == "video"
    assert media.kind_of("notes.txt") == "unsupported" and media.kind_of("noext") == "unsupported"
    assert not set(media.IMAGE_SUFFIXES) & set(media.VIDEO_SUFFIXES)
    assert set(media.FRAME_SUFFIXES) <= set(media.IMAGE_SUFFIXES)


def test_segment_demo_and_video_predictor_accept_the_same_video_extensions(tmp_path):
    """Every extension of the one table is a video to `segment`'s input finder, the video
    predictor's frame source and the demo's upload check; anything else is refused by all three."""
    import segapp
    from segapp.batch.inputs import discover
    from segapp.demo.service import DemoError, DemoService, VideoService
    from segapp.video.frames import VideoReadError, open_frames

    for suffix in media.VIDEO_SUFFIXES:
        (tmp_path / f"clip{suffix}").write_bytes(b"not a video")
    (tmp_path / "clip.flv").write_bytes(b"not a video")
    found = {i.rel: i.kind for i in discover([tmp_path])}
    assert found == {**{f"clip{s}": "video" for s in media.VIDEO_SUFFIXES}, "clip.flv": "unsupported"}

    video = VideoService(DemoService(segapp.build_model("test_tiny", device="cpu")))
    sid = video.create_session()
    for suffix in media.VIDEO_SUFFIXES:
        path = tmp_path / f"clip{suffix}"
        with pytest.raises(DemoError) as demo_err:
            video.open_video(sid, path)
        assert "not a supported video" not in str(demo_err.value)  # refused for its content only
        try:
            open_frames(path)
        except VideoReadError as err:
            assert "unsupported video" not in str(err)
    with pytest.raises(DemoError, match="not a supported video"):
        video.open_video(sid, tmp_path / "clip.flv")
    with pytest.raises(VideoReadError, match="unsupported video"):
        open_frames(tmp_path / "clip.flv")


def test_segment_a_webm_clip(tmp_path):
    """`segapp segment clip.webm` segments the clip (it used to be "unsupported")."""
    pytest.importorskip("segapp.video.predictor", reason="the video predictor has not landed")
    from segapp.batch.outputs import read_id_png
    from segapp.cli import main
    from segapp.video.frames import open_frames

    clip = write_webm(tmp_path / "in" / "clip.webm")
    assert len(open_frames(clip)) == 3
    (tmp_path / "p.json").write_text(json.dumps({"videos": {"clip.webm": {"0": [{"id": 4, "box": [10, 15, 35, 45]}]}}}))
    out = tmp_path / "out"
    assert main(["segment", str(clip), "--out", str(out), "--prompts", str(tmp_path / "p.json"), *TINY]) == 0
    record = json.loads((out / "manifest.jsonl").read_text().splitlines()[0])
    assert record["input"] == "clip.webm" and record["status"] == "ok" and record["kind"] == "video"
    assert record["outputs"] == [f"clip/{i:06d}.png" for i in range(3)]
    for name in record["outputs"]:
        ids = read_id_png(out / name)
        assert ids.shape == (64, 80) and set(np.unique(ids).tolist()) <= {0, 4}


# ---------------------------------------------------------------------------- conversions
def test_box_conventions_of_one_pixel_and_empty_masks():
    from segapp.formats import boxes

    mask = np.zeros((8, 10), bool)
    mask[5, 3] = True
    assert boxes.mask_to_box(mask) == [3, 5, 3, 5]  # inclusive corners
    assert boxes.mask_to_xywh(mask) == [3, 5, 1, 1]  # COCO
    np.testing.assert_array_equal(boxes.mask_to_edge_box(mask), [3, 5, 4, 6])  # pixel edges
    empty = np.zeros((8, 10), bool)
    assert boxes.mask_to_box(empty) == [0, 0, 0, 0] and boxes.mask_to_xywh(empty) == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="empty"):
        boxes.mask_to_edge_box(empty)


def test_rle_forms_round_trip_and_agree_with_pycocotools():
    from pycocotools import mask as mask_utils

    from segapp.formats import rle

    rng = np.random.default_rng(0)
    masks = rng.random((4, 7, 9)) > 0.6
    masks[0, 0, 0] = True  # a first pixel that is set: the counts start with a 0 run
    for mask, raw in zip(masks, rle.mask_to_rle(masks)):
        packed = rle.encode_rle(mask)
        assert isinstance(packed["counts"], str) and packed["size"] == [7, 9]
        assert packed == rle.coco_encode_rle(raw)
        for form in (raw, packed, {**packed, "counts": packed["counts"].encode()}):
            np.testing.assert_array_equal(rle.decode_rle(form), mask)
        area, box = rle.rle_area_and_box(packed)
        assert area == rle.area_from_rle(raw) == int(mask.sum())
        coded = {"size": packed["size"], "counts": packed["counts"].encode()}
        assert box == mask_utils.toBbox(coded).tolist()
    assert rle.mask_to_rle(masks[:1])[0]["counts"][0] == 0


def test_small_components_and_small_regions_share_one_labelling():
    from segapp.formats import components

    mask = np.zeros((10, 10), bool)
    mask[1:3, 1:3] = True  # an island of 4 pixels
    mask[5:10, 5:10] = True  # one of 25
    assert components.small_components(mask, 4).sum() == 4  # area <= max_area
    assert components.small_components(mask, 3).sum() == 0
    kept, changed = components.remove_small_regions(mask, 5, "islands")  # area < thresh
    assert changed and kept.sum() == 25
    same, changed = components.remove_small_regions(mask, 4, "islands")
    assert not changed and (same == mask).all()


def test_sha256_file_matches_hashlib(tmp_path):
    import hashlib

    from segapp.formats.hashing import CHUNK_BYTES, sha256_file

    data = bytes(range(256)) * (CHUNK_BYTES // 256 + 3)  # more than one chunk
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()
