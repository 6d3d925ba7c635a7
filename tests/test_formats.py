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
    from segapp.service import DemoError, DemoService, VideoService
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


def test_id_map_overlap_rule_smaller_objects_on_top_equal_areas_later_wins():
    from segapp.formats.id_maps import instance_id_map

    big = np.zeros((6, 6), bool)
    big[:, :] = True
    small = np.zeros((6, 6), bool)
    small[1:3, 1:3] = True
    for masks, ids in (([small, big], [5, 9]), ([big, small], [9, 5])):  # order does not matter
        id_map = instance_id_map(masks, (6, 6), ids)
        assert id_map.dtype == np.uint16 and (id_map[1:3, 1:3] == 5).all() and (id_map == 9).sum() == 32
    twin = np.roll(small, 1, axis=1)  # the same area: the later mask wins where they meet
    assert instance_id_map([small, twin], (6, 6))[1, 2] == 2
    assert instance_id_map([twin, small], (6, 6))[1, 2] == 2
    with pytest.raises(ValueError, match="1..65535"):
        instance_id_map([small], (6, 6), [70000])
    with pytest.raises(ValueError, match="1 masks but 2 ids"):
        instance_id_map([small], (6, 6), [1, 2])


def test_id_png_depth_follows_the_largest_id(tmp_path):
    from segapp.formats.id_maps import encode_id_png, read_id_png

    ids = np.zeros((4, 5), np.uint16)
    ids[0, 0], ids[3, 4] = 7, 255
    for top, forced, depth in ((255, None, 8), (255, True, 16), (300, None, 16)):
        ids[3, 4] = top
        path = tmp_path / f"{top}-{forced}.png"
        path.write_bytes(encode_id_png(ids, sixteen_bit=forced))
        from PIL import Image
        with Image.open(path) as im:
            assert (im.mode == "L") == (depth == 8)
        np.testing.assert_array_equal(read_id_png(path), ids)
    with pytest.raises(ValueError, match="does not fit an 8-bit PNG"):
        encode_id_png(ids, sixteen_bit=False)


def test_tint_blends_each_id_once_with_rounding():
    from segapp.formats.overlay import id_colour, tint

    rgb = np.full((2, 3, 3), 101, np.uint8)
    ids = np.array([[0, 1, 2], [2, 2, 0]], np.uint16)
    out = tint(rgb, ids, {1: (0, 0, 0)}, alpha=0.5)
    np.testing.assert_array_equal(out[0, 0], rgb[0, 0])  # background untouched
    np.testing.assert_array_equal(out[0, 1], [50, 50, 50])  # 50.5 rounds to even
    expected = np.round(0.5 * 101 + 0.5 * np.array(id_colour(2), np.float32)).astype(np.uint8)
    np.testing.assert_array_equal(out[1, 0], expected)  # no colour given: the id's own


def test_mp4_writer_is_h264_atomic_and_pads_odd_sides(tmp_path):
    av = pytest.importorskip("av")
    from segapp.formats.mp4 import Mp4Writer, write_mp4

    frames = [np.full((31, 45, 3), 40 * t, np.uint8) for t in range(4)]
    path = write_mp4(frames, tmp_path / "a.mp4", fps=30000 / 1001)
    assert list(tmp_path.iterdir()) == [path]  # no temporary left behind
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and (stream.width, stream.height) == (46, 32)
        assert float(stream.average_rate) == pytest.approx(30000 / 1001, abs=1e-3)  # NTSC rate kept
        assert sum(1 for _ in container.decode(stream)) == 4
    assert write_mp4(frames, tmp_path / "b.mp4", fps=30).read_bytes() == \
        write_mp4(frames, tmp_path / "c.mp4", fps=30).read_bytes()  # the same bytes every run
    with pytest.raises(ValueError, match="no frames"):
        write_mp4([], tmp_path / "d.mp4", fps=30)
    writer = Mp4Writer(tmp_path / "e.mp4", fps=30)
    writer.write(frames[0])
    writer.abort()
    assert not (tmp_path / "d.mp4").exists() and not (tmp_path / "e.mp4").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "b.mp4", "c.mp4"]


def test_read_image_applies_exif_orientation_unless_stored_pixels(tmp_path):
    from PIL import Image

    from segapp.formats.images import EXIF_ORIENTATION, read_image

    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :10] = 255  # a white band on the left of the stored pixels
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # viewers rotate it 90 degrees clockwise
    path = tmp_path / "rotated.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    shown = read_image(path)
    assert shown.shape == (40, 20, 3) and shown[:10].mean() > 200 and shown[-10:].mean() < 50  # band on top
    as_stored = read_image(path.read_bytes(), stored_pixels=True)
    assert as_stored.shape == (20, 40, 3) and as_stored[:, :10].mean() > 200 and as_stored.flags.writeable
    seen = []
    read_image(path, check_size=seen.append)
    assert seen == [(40, 20)]  # the stored header's (width, height), before decoding

    (tmp_path / "bad.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match="not a readable image"):
        read_image(tmp_path / "bad.png")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ValueError, match="not a readable image"):
        read_image(truncated)
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "missing.png")


def test_demo_uploads_of_images_and_videos_share_one_size_check(tmp_path):
    """An empty or oversized upload is refused with the same words for an image and a video."""
    import segapp
    from segapp.service import DemoError, DemoService, Limits, VideoService

    service = DemoService(segapp.build_model("test_tiny", device="cpu"),
                          limits=Limits(max_upload_bytes=100, max_video_bytes=100))
    video = VideoService(service)
    for name in ("empty.png", "empty.mp4"):
        (tmp_path / name).write_bytes(b"")
    for name in ("big.png", "big.mp4"):
        (tmp_path / name).write_bytes(b"x" * 3 * 2**20)
    with pytest.raises(DemoError, match="empty.png is empty"):
        service.load_image(tmp_path / "empty.png")
    with pytest.raises(DemoError, match="empty.mp4 is empty"):
        video.open_video(video.create_session(), tmp_path / "empty.mp4")
    with pytest.raises(DemoError, match=r"big.png is 3.0 MB; the limit is 0 MB"):
        service.load_image(tmp_path / "big.png")
    with pytest.raises(DemoError, match=r"big.mp4 is 3.0 MB; the limit is 0 MB"):
        video.open_video(video.create_session(), tmp_path / "big.mp4")
    with pytest.raises(DemoError, match=r"no video given: upload a video file \(.mp4, .*\.webm\)"):
        video.open_video(video.create_session(), None)


def test_eval_reads_the_stored_pixels_segment_reads_for_coco_prompts(tmp_path):
    """`segapp eval coco` and `segment` with COCO prompts see the same pixels: as stored (EXIF
    orientation not applied), the same as OpenCV's decoding of the JPEG; a size that differs from
    the annotations is refused from the header."""
    import cv2
    from PIL import Image

    from segapp.evaluation.coco import ImageEntry, read_image as eval_read_image
    from segapp.formats.images import EXIF_ORIENTATION, read_image

    rng = np.random.default_rng(1)
    stored = (rng.random((24, 40, 3)) * 255).astype(np.uint8)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 8
    path = tmp_path / "photo.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=90)
    entry = ImageEntry(image_id=1, file_name=path.name, height=24, width=40, path=path, instances=())
    pixels = eval_read_image(entry)
    np.testing.assert_array_equal(pixels, read_image(path, stored_pixels=True))
    opencv = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)[..., ::-1]
    np.testing.assert_array_equal(pixels, opencv)  # what eval read before (issue 15)
    with pytest.raises(ValueError, match="is 40x24, the annotations say 24x40"):
        eval_read_image(ImageEntry(1, path.name, 40, 24, path, ()))
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="cannot decode image .*bad.jpg"):
        eval_read_image(ImageEntry(2, "bad.jpg", 24, 40, tmp_path / "bad.jpg", ()))
