"""The web demo's service layer (no Gradio): sessions, clicks, objects, undo/redo, segment
everything, every export format, limits and eviction, and the CLI's checkpoint rules."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

import segapp
from segapp.service import examples, exports
from segapp.service import (MAX_POINTS_PER_OBJECT, DemoError, DemoService, Limits, SessionNotFound,
                            parse_prompts)
from tiny_models import tracking_model
from tiny_models import tiny_model

PERMISSIVE_AMG = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture()
def service(model):
    return DemoService(model, amg_options=PERMISSIVE_AMG)


@pytest.fixture(scope="module")
def image():
    return examples.synthetic_image(160)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def count_embeddings(model, monkeypatch) -> list:
    calls = []
    original = model.embed_images

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "embed_images", counting)
    return calls


def decode_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


# ---------------------------------------------------------------------- sessions and clicks
def test_embedding_computed_once_per_image_and_clicks_only_decode(service, model, image, monkeypatch):
    calls = count_embeddings(model, monkeypatch)
    sid = service.create_session()
    first = service.set_image(sid, image)
    assert not first.cached and len(calls) == 1
    again = service.set_image(sid, image.copy())
    assert again.cached and len(calls) == 1
    timing = service.click(sid, 80, 90, "positive")
    service.click(sid, 20, 20, "negative")
    assert len(calls) == 1, "a click must not recompute the image embedding"
    assert timing.ms >= 0 and "decoder" in str(timing)
    obj = service.get_session(sid).selected
    assert obj.points == ((80.0, 90.0), (20.0, 20.0)) and obj.labels == (1, 0)
    assert obj.candidates.shape == (3, 160, 160) and obj.candidates.dtype == bool
    assert len(obj.scores) == 3 and obj.chosen == int(np.argmax(obj.scores))


def test_click_matches_the_image_predictor(service, model, image):
    sid = service.create_session()
    service.set_image(sid, image)
    service.add_point(sid, 80, 90)
    service.add_point(sid, 30, 140, positive=False)
    predictor = segapp.ImagePredictor(model)
    predictor.set_image(image)
    masks, scores, _ = predictor.predict(np.array([[80, 90], [30, 140]], np.float32), np.array([1, 0]),
                                         multimask_output=True)
    obj = service.get_session(sid).selected
    np.testing.assert_array_equal(obj.candidates, masks > 0.5)
    np.testing.assert_allclose(obj.scores, scores, rtol=1e-5)


def test_sessions_are_isolated(service, image):
    a, b = service.create_session(), service.create_session()
    assert a != b
    service.set_image(a, image)
    service.set_image(b, image[::-1].copy())
    service.click(a, 10, 10, "positive")
    assert len(service.get_session(a).objects) == 1
    assert service.get_session(b).objects == ()
    with pytest.raises(SessionNotFound):
        service.get_session("not-a-session")
    assert service.ensure_session("not-a-session") not in (a, b)


def test_click_needs_an_image_and_stays_inside_it(service, image):
    sid = service.create_session()
    with pytest.raises(DemoError, match="upload an image"):
        service.click(sid, 1, 1, "positive")
    service.set_image(sid, image)
    with pytest.raises(DemoError, match="outside"):
        service.click(sid, 500, 1, "positive")
    with pytest.raises(DemoError, match="click mode"):
        service.click(sid, 1, 1, "lasso")


def test_box_from_two_clicks(service, image):
    sid = service.create_session()
    service.set_image(sid, image)
    assert service.click(sid, 120, 100, "box") is None
    assert service.get_session(sid).pending_corner == (120.0, 100.0)
    assert service.get_session(sid).objects == ()
    service.click(sid, 40, 20, "box")
    obj = service.get_session(sid).selected
    assert obj.box == (40.0, 20.0, 120.0, 100.0) and obj.mask is not None
    assert service.get_session(sid).pending_corner is None


# ---------------------------------------------------------------------- undo, redo, objects
def test_undo_redo_and_clear(service, image):
    sid = service.create_session()
    service.set_image(sid, image)
    assert not service.undo(sid) and not service.redo(sid)
    service.click(sid, 80, 90, "positive")
    one = service.get_session(sid).selected
    service.click(sid, 20, 20, "negative")
    assert len(service.get_session(sid).selected.points) == 2
    assert service.undo(sid)
    assert service.get_session(sid).selected == one
    np.testing.assert_array_equal(service.get_session(sid).selected.mask, one.mask)
    assert service.redo(sid)
    assert len(service.get_session(sid).selected.points) == 2
    service.undo(sid)
    service.click(sid, 100, 40, "positive")  # a new step drops the redo branch
    assert not service.redo(sid)
    service.clear(sid)
    assert service.get_session(sid).objects == ()
    assert service.undo(sid) and len(service.get_session(sid).objects) == 1
    assert service.undo(sid) and service.undo(sid)
    assert service.get_session(sid).objects == ()


def test_several_objects_select_rename_delete_and_candidates(service, image):
    sid = service.create_session()
    service.set_image(sid, image, name="shapes.png")
    service.click(sid, 80, 90, "positive")
    second = service.new_object(sid)
    service.click(sid, 150, 60, "positive")
    session = service.get_session(sid)
    assert [o.obj_id for o in session.objects] == [1, second] == [1, 2]
    assert session.objects[0].color != session.objects[1].color
    assert session.objects[0].points == ((80.0, 90.0),) and session.objects[1].points == ((150.0, 60.0),)

    service.select_object(sid, 1)
    service.click(sid, 70, 100, "positive")
    assert len(service.get_session(sid).get_object(1).points) == 2
    assert len(service.get_session(sid).get_object(2).points) == 1

    service.rename_object(sid, 2, "triangle")
    assert service.get_session(sid).get_object(2).name == "triangle"
    with pytest.raises(DemoError):
        service.rename_object(sid, 2, "  ")

    obj = service.get_session(sid).get_object(1)
    other = (obj.chosen + 1) % 3
    service.choose_candidate(sid, other)
    np.testing.assert_array_equal(service.get_session(sid).get_object(1).mask, obj.candidates[other])
    with pytest.raises(DemoError):
        service.choose_candidate(sid, 7)

    service.delete_object(sid, 1)
    assert [o.obj_id for o in service.get_session(sid).objects] == [2]
    assert service.get_session(sid).selected is None
    service.click(sid, 20, 30, "positive")  # nothing selected: a new object with a fresh id
    assert [o.obj_id for o in service.get_session(sid).objects] == [2, 3]
    service.undo(sid)
    service.undo(sid)
    assert [o.obj_id for o in service.get_session(sid).objects] == [1, 2]
    with pytest.raises(DemoError, match="no object"):
        service.delete_object(sid, 99)


def test_segment_everything_makes_undoable_objects(service, image):
    sid = service.create_session()
    service.set_image(sid, image)
    service.click(sid, 80, 90, "positive")
    clicked = service.get_session(sid).objects
    timing = service.segment_everything(sid, points_per_side=4)
    objs = service.get_session(sid).objects
    assert len(objs) >= 2 and "segment everything" in str(timing)
    # Issue 16: the masks are added after the objects made so far, which stay as they were.
    assert objs[:1] == clicked
    areas = [int(o.mask.sum()) for o in objs[1:]]
    assert areas == sorted(areas, reverse=True)
    assert len({o.obj_id for o in objs}) == len(objs)
    service.undo(sid)
    assert len(service.get_session(sid).objects) == 1
    with pytest.raises(DemoError, match="points per side"):
        service.segment_everything(sid, points_per_side=0)


# ---------------------------------------------------------------------- exports
def test_exports_instance_png_coco_rle_and_overlay(service, image, tmp_path):
    sid = service.create_session()
    service.set_image(sid, image, name="shapes.png")
    service.set_box(sid, (10, 10, 150, 150))
    service.new_object(sid)
    service.click(sid, 80, 90, "positive")
    objs = service.get_session(sid).objects
    masks = [o.mask for o in objs]

    ids = decode_png(service.instance_png(sid))
    assert ids.shape == image.shape[:2] and ids.dtype == np.uint8
    np.testing.assert_array_equal(ids, exports.instance_id_map(masks, image.shape[:2], [1, 2]))
    assert masks[1].sum() < masks[0].sum()  # the click's object lies inside the box's
    assert (ids == 2).sum() == masks[1].sum()  # the smaller object is drawn on top (segapp.formats.id_maps)
    assert ((ids == 1) == (masks[0] & ~masks[1])).all()

    doc = json.loads(service.coco_json(sid))
    assert doc["images"] == [{"id": 1, "width": 160, "height": 160, "file_name": "shapes.png"}]
    assert [a["object_id"] for a in doc["annotations"]] == [1, 2]
    for ann, mask in zip(doc["annotations"], masks):
        np.testing.assert_array_equal(exports.decode_rle(ann["segmentation"]), mask)
        assert ann["area"] == int(mask.sum()) and ann["iscrowd"] == 0
        assert ann["bbox"] == exports.bbox_xywh(mask)
        assert 0 <= ann["score"] <= 1.5

    overlay = decode_png(service.overlay_png(sid))
    assert overlay.shape == image.shape and overlay.dtype == np.uint8
    inside = masks[1]
    assert not np.array_equal(overlay[inside], image[inside])  # tinted
    untouched = ~(masks[0] | masks[1])
    if untouched.any():
        np.testing.assert_array_equal(overlay[untouched][:10], image[untouched][:10])

    files = service.export(sid, tmp_path / "out")
    assert {p.name for p in files.values()} == {"shapes_instances.png", "shapes_coco_rle.json", "shapes_overlay.png"}
    assert all(p.stat().st_size > 0 for p in files.values())


def test_instance_png_is_16_bit_beyond_255_ids():
    masks = [np.zeros((4, 4), bool) for _ in range(2)]
    masks[0][0, 0] = masks[1][3, 3] = True
    id_map = exports.instance_id_map(masks, (4, 4), ids=[5, 300])
    decoded = decode_png(exports.id_map_to_png(id_map))
    assert decoded[0, 0] == 5 and decoded[3, 3] == 300 and decoded.sum() == 305


def test_render_marks_prompts(service, image):
    sid = service.create_session()
    assert service.render(sid) is None
    service.set_image(sid, image)
    np.testing.assert_array_equal(service.render(sid), image)
    service.click(sid, 80, 90, "positive")
    assert tuple(service.render(sid)[90, 80]) == exports.POSITIVE_COLOR


# ---------------------------------------------------------------------- stateless API
def test_segment_image_api_and_prompt_validation(service, model, image, monkeypatch):
    calls = count_embeddings(model, monkeypatch)
    mask, info = service.segment_image(image, '{"points": [[80, 90]], "labels": [1]}')
    mask2, info2 = service.segment_image(image.copy(), {"points": [[80, 90]]})
    assert len(calls) == 1 and info2["timings_ms"]["embedding_cached"]
    np.testing.assert_array_equal(mask, mask2)
    assert mask.shape == image.shape[:2] and info["area"] == int(mask.sum())
    assert len(info["scores"]) == 3 and info["best"] == int(np.argmax(info["scores"]))
    _, boxed = service.segment_image(image, '{"box": [10, 10, 100, 100]}')
    assert boxed["area"] > 0

    for bad, message in [("{", "not valid JSON"), ("[1, 2]", "JSON object"), ('{"points": []}', "at least one"),
                         ('{"points": [[1, 2]], "labels": [3]}', "labels"), ('{"pts": [[1, 2]]}', "unknown"),
                         ('{"points": [[999, 2]]}', "outside"), ('{"box": [1, 2, 3]}', "box")]:
        with pytest.raises(DemoError, match=message):
            service.segment_image(image, bad)
    assert parse_prompts('{"points": [[1, 2]]}', (10, 10)) == (((1.0, 2.0),), (1,), None)


def test_points_per_object_and_per_request_are_capped(model, image):
    # 200,000 points in one request used to take 219 s under the shared model lock.
    assert Limits().max_points_per_object == MAX_POINTS_PER_OBJECT == 64
    service = DemoService(model, limits=Limits(max_points_per_object=3))
    sid = service.create_session()
    service.set_image(sid, image)
    for k in range(3):
        service.click(sid, 20 + 10 * k, 30, "positive")
    with pytest.raises(DemoError, match=r"object 1 already has 3 clicks, the most one object may have \(3\)"):
        service.click(sid, 80, 80, "negative")
    assert [len(o.points) for o in service.get_session(sid).objects] == [3]  # nothing changed
    service.new_object(sid)
    service.click(sid, 80, 80, "positive")  # a new object starts afresh
    assert [len(o.points) for o in service.get_session(sid).objects] == [3, 1]

    many = {"points": [[1, 1]] * 65}
    with pytest.raises(DemoError, match="65 points in one request; the limit is 64 points per request"):
        DemoService(model).segment_image(image, many)
    huge = json.dumps({"points": [[1, 1]] * 200_000})
    with pytest.raises(DemoError, match="characters; the limit is 65536 .at most 64 points per request"):
        parse_prompts(huge, (10, 10))
    assert len(parse_prompts({"points": [[1, 1]] * 64}, (10, 10))[0]) == 64


def test_segment_everything_api(service, image):
    id_map, records = service.segment_everything_image(image, points_per_side=4)
    assert id_map.shape == image.shape[:2] and len(records) >= 1
    assert [r["id"] for r in records] == list(range(1, len(records) + 1))
    for rec in records:
        mask = exports.decode_rle(rec["segmentation"])
        assert mask.sum() == rec["area"]
        assert ((id_map == rec["id"]) <= mask).all()


# ---------------------------------------------------------------------- files and limits
def test_bad_files_get_clear_messages(model, image, tmp_path):
    service = DemoService(model, limits=Limits(max_upload_bytes=50_000, max_image_side=200))
    sid = service.create_session()
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(DemoError, match="not an image"):
        service.set_image(sid, text)
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (150, 150, 3), dtype=np.uint8)).save(big)
    with pytest.raises(DemoError, match="limit is 0 MB|limit is"):
        service.set_image(sid, big)
    wide = tmp_path / "wide.png"
    Image.fromarray(np.zeros((10, 300, 3), np.uint8)).save(wide)
    with pytest.raises(DemoError, match="300x10 pixels"):
        service.set_image(sid, wide)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(DemoError, match="empty"):
        service.set_image(sid, empty)
    with pytest.raises(DemoError, match="no image"):
        service.set_image(sid, None)
    ok = tmp_path / "ok.png"
    Image.fromarray(image).save(ok)
    service.set_image(sid, ok)
    assert service.get_session(sid).image_name == "ok.png"


def test_idle_sessions_are_evicted_and_count_is_bounded(model):
    clock = Clock()
    service = DemoService(model, limits=Limits(max_sessions=3, idle_seconds=60), clock=clock)
    a = service.create_session()
    clock.now = 30
    b = service.create_session()
    clock.now = 70  # a is idle for 70 s
    assert service.evict_idle() == [a]
    assert service.session_ids() == [b]
    service.get_session(b)  # touch
    c, d, e = (service.create_session() for _ in range(3))
    assert service.session_ids() == [c, d, e]  # b, least recently used, made room
    with pytest.raises(SessionNotFound, match="expired"):
        service.get_session(b)


def test_history_is_bounded_by_steps_and_bytes(model, image):
    service = DemoService(model, limits=Limits(max_history=3))
    sid = service.create_session()
    service.set_image(sid, image)
    for k in range(6):
        service.click(sid, 10 + 10 * k, 50, "positive")
    assert len(service.get_session(sid).undo_stack) == 3

    fixed = service.get_session(sid).fixed_nbytes()
    # Room for about two sets of candidates (three planes each): undo steps share unchanged
    # masks, so only refinements of one object cost history.
    tight = DemoService(model, limits=Limits(max_session_bytes=fixed + 7 * 160 * 160))
    sid = tight.create_session()
    tight.set_image(sid, image)
    for k in range(6):
        tight.click(sid, 10 + 10 * k, 50, "positive")
    session = tight.get_session(sid)
    assert len(session.selected.points) == 6  # the current state is never dropped
    assert len(session.undo_stack) <= 2
    assert session.nbytes() <= tight.limits.max_session_bytes
    assert tight.undo(sid) and len(tight.get_session(sid).selected.points) == 5


# ---------------------------------------------------------------------- CLI
def test_cli_refuses_without_checkpoint_and_names_the_command(monkeypatch, tmp_path, capsys):
    """A named official model that was not downloaded stops with the download command (without
    --model the bundled segapp_small runs instead: tests/test_bundled_model.py)."""
    from segapp.cli import main
    from segapp.cli.demo import resolve_checkpoint

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SEGAPP_CHECKPOINTS", raising=False)
    assert main(["demo", "--model", "sam2.1_hiera_t"]) == 2
    err = capsys.readouterr().err
    assert "segapp download sam2.1_hiera_t" in err and "--checkpoint PATH" in err
    assert main(["demo", "--model", "my_model.yaml"]) == 2
    assert "--model test_tiny" in capsys.readouterr().err
    assert main(["demo", "--model", "sam2.1_hiera_l", "--checkpoint", "missing.pt"]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert resolve_checkpoint("test_tiny", None) is None


def test_checkpoints_load_with_weights_only(tmp_path, monkeypatch, capsys):
    """A checkpoint whose pickle would run code is refused, and the code never runs."""
    from segapp.cli import main

    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "bad.pt"
    torch.save({"model": {"w": Exploit()}}, bad)
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    assert main(["demo", "--model", "test_tiny", "--checkpoint", str(bad), "--device", "cpu"]) == 2
    assert "cannot" in capsys.readouterr().err
    assert not marker.exists()


# ---------------------------------------------------------------------- files on disk
def _write(path, nbytes, mtime):
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * nbytes)
    os.utime(path, (mtime, mtime))
    return path


def test_cache_janitor_prunes_by_age_then_oldest_first_and_spares_held_files(tmp_path):
    from segapp.service.cache import CacheJanitor

    root, outside = tmp_path / "cache", tmp_path / "user"
    now = 10_000.0
    old = _write(root / "a1" / "old.png", 100, now - 4000)  # older than max_age
    held = _write(root / "a2" / "clip.mp4", 500, now - 5000)  # old, but a live session reads it
    b = _write(root / "b" / "b.png", 300, now - 30)
    c = _write(root / "c" / "c.png", 300, now - 20)
    d = _write(root / "d" / "d.png", 300, now - 10)
    mine = _write(outside / "photo.png", 100, now - 9000)  # not under a root: never touched
    janitor = CacheJanitor([root], max_bytes=1200, max_age_s=3600, held=lambda: {held}, clock=lambda: now)
    assert janitor.contains(b) and not janitor.contains(mine)
    assert janitor.prune() == 100 + 300  # the expired file, then the oldest until 1200 bytes fit
    assert [p.exists() for p in (old, held, b, c, d, mine)] == [False, True, False, True, True, True]
    assert not (root / "a1").exists() and not (root / "b").exists()  # emptied folders go too
    assert janitor.total_bytes() == 1100
    janitor.max_bytes = 100  # the held file alone is over the cap: it stays, the rest go
    janitor.prune()
    assert held.exists() and not c.exists() and not d.exists()


def test_closing_or_evicting_a_session_deletes_the_files_it_adopted(model, image, tmp_path):
    clock = Clock()
    service = DemoService(model, limits=Limits(idle_seconds=60), clock=clock)
    upload = tmp_path / "cache" / "h1" / "upload.png"
    upload.parent.mkdir(parents=True)
    Image.fromarray(image).save(upload)
    downloads = tmp_path / "outputs" / "f1"
    a = service.create_session()
    service.adopt_file(a, upload)
    service.set_image(a, upload)
    service.click(a, 80, 90, "positive")
    service.adopt_file(a, downloads)
    service.export(a, downloads)
    users_file = tmp_path / "mine.png"
    Image.fromarray(image).save(users_file)
    b = service.create_session()
    service.set_image(b, users_file)  # given but not adopted: never deleted
    clock.now = 30
    service.get_session(b)
    clock.now = 70  # a is idle for 70 s: evicted, its files go with it
    assert service.evict_idle() == [a]
    assert not upload.exists() and not downloads.exists() and not upload.parent.exists()
    assert users_file.exists()
    c = service.create_session()
    extra = _write(tmp_path / "cache" / "h2" / "x.png", 10, 0)
    service.adopt_file(c, extra)
    service.close_session(c)
    assert not extra.exists()


# ---------------------------------------------------------------------- video
@pytest.fixture(scope="module")
def video_service():
    """A VideoService on a test model whose object-score head says "object present" (random
    weights otherwise predict "no object" everywhere and every mask would be empty)."""
    from segapp.service import VideoService

    return VideoService(DemoService(tracking_model(add=20.0)))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    frames = [np.roll(examples.synthetic_image(96), 4 * i, axis=1) for i in range(6)]
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    exports.write_mp4(frames, path, fps=6)
    return path


def test_video_click_propagate_correct_and_export(video_service, clip, tmp_path):
    import zipfile

    video = video_service
    sid = video.create_session()
    with pytest.raises(DemoError, match="upload a video"):
        video.click(sid, 0, 10, 10)
    info = video.open_video(sid, clip)
    assert info == {"frames": 6, "width": 96, "height": 96, "fps": 6.0}
    video.click(sid, 2, 30, 35)
    session = video.get_session(sid)
    assert set(session.results) == {2} and session.mask(2, 1).any()
    assert tuple(video.frame(sid, 2)[35, 30]) == exports.POSITIVE_COLOR

    steps = list(video.propagate(sid, "both", start_frame=2, preview_interval=0.0))
    assert [s[0] for s in steps] == [2, 3, 4, 5, 2, 1, 0]
    assert [s[1] for s in steps] == list(range(1, 8)) and all(s[2] == 7 for s in steps)
    assert all(s[3] is not None and s[3].shape == (96, 96, 3) for s in steps)
    assert set(session.results) == set(range(6))

    second = video.new_object(sid)
    video.click(sid, 4, 70, 20)  # correct on another frame, then propagate again
    assert set(session.results[4]) == {1, second}
    list(video.propagate(sid, "forward", start_frame=4))
    assert all(set(session.results[f]) == {1, second} for f in (4, 5))

    files = video.export(sid, tmp_path)
    with zipfile.ZipFile(files["png_zip"]) as zf:
        names = sorted(zf.namelist())
        assert names == [f"frames/{f:05d}.png" for f in range(6)]
        ids = np.asarray(Image.open(io.BytesIO(zf.read("frames/00005.png"))))
    assert ids.shape == (96, 96)
    # The overlap rule of segapp.formats.id_maps (shared with `segapp segment` since issue 15;
    # before, the later object was on top): the smaller object keeps its pixels, a tie goes to the later.
    first_mask, second_mask = session.mask(5, 1), session.mask(5, second)
    second_on_top = second_mask.sum() <= first_mask.sum()
    np.testing.assert_array_equal(ids == second, second_mask if second_on_top else second_mask & ~first_mask)
    np.testing.assert_array_equal(ids == 1, first_mask & ~second_mask if second_on_top else first_mask)
    doc = json.loads(files["coco_json"].read_text())
    assert len(doc["images"]) == 6
    ann = next(a for a in doc["annotations"] if a["image_id"] == 6 and a["object_id"] == 1)
    np.testing.assert_array_equal(exports.decode_rle(ann["segmentation"]), session.mask(5, 1))
    import cv2

    cap = cv2.VideoCapture(str(files["overlay_mp4"]))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 6 and cap.read()[1].shape == (96, 96, 3)
    cap.release()
    video.close_session(sid)
    assert sid not in video.session_ids()


def test_video_limits_and_bad_files(video_service, clip, tmp_path):
    from segapp.service import VideoService

    video = video_service
    sid = video.create_session()
    notes = tmp_path / "notes.mp4"
    notes.write_bytes(b"not a video at all")
    with pytest.raises(DemoError, match="could not be read as a video"):
        video.open_video(sid, notes)
    with pytest.raises(DemoError, match="video file not found"):
        video.open_video(sid, tmp_path)  # a folder is not an uploaded file
    text = tmp_path / "clip.txt"
    text.write_text("x")
    with pytest.raises(DemoError, match="not a supported video"):
        video.open_video(sid, text)
    strict = VideoService(DemoService(video.runtime.model, limits=Limits(max_video_frames=3)))
    with pytest.raises(DemoError, match="6 frames; the limit is 3"):
        strict.open_video(strict.create_session(), clip)
    video.open_video(sid, clip)
    with pytest.raises(DemoError, match="before propagating"):
        list(video.propagate(sid))
    with pytest.raises(DemoError, match="outside the video"):
        video.click(sid, 6, 1, 1)


def test_video_clicks_per_object_and_frame_are_capped(video_service, clip):
    from segapp.service import VideoService

    video = VideoService(DemoService(video_service.runtime.model, limits=Limits(max_points_per_object=2)))
    sid = video.create_session()
    video.open_video(sid, clip)
    video.click(sid, 0, 30, 35)
    video.click(sid, 0, 40, 35, positive=False)
    with pytest.raises(DemoError, match=r"object 1 on frame 0 already has 2 clicks, the most one object may "
                                        r"have \(2\)"):
        video.click(sid, 0, 50, 35)
    assert video.get_session(sid).prompts[(1, 0)][0] == ((30.0, 35.0), (40.0, 35.0))
    video.click(sid, 1, 30, 35)  # the cap is per frame: another frame takes clicks
    video.close_session(sid)


def test_a_video_upload_stays_while_a_session_reads_it_and_goes_when_it_closes(video_service, clip, tmp_path):
    import shutil

    video = video_service
    upload = tmp_path / "cache" / "h" / "clip.mp4"
    upload.parent.mkdir(parents=True)
    shutil.copy(clip, upload)
    a, b = video.create_session(), video.create_session()
    for sid in (a, b):  # the same upload (Gradio names copies by content) open in two sessions
        video.adopt_file(sid, upload)
        video.open_video(sid, upload)
    assert upload in video.held_files()
    video.close_session(a)
    assert upload.exists()  # b still reads its frames
    video.click(b, 3, 30, 35)
    video.close_session(b)
    assert not upload.exists() and upload not in video.held_files()


def test_masks_beyond_the_session_memory_are_refused(model, image):
    plane = 160 * 160
    probe = DemoService(model)
    sid = probe.create_session()
    probe.set_image(sid, image)
    fixed = probe.get_session(sid).fixed_nbytes()
    # Room for exactly two clicked objects (three candidate planes each) and nothing more.
    service = DemoService(model, limits=Limits(max_session_bytes=fixed + 6 * plane + 10),
                          amg_options=PERMISSIVE_AMG)
    sid = service.create_session()
    service.set_image(sid, image)
    service.click(sid, 30, 30, "positive")
    service.new_object(sid)
    service.click(sid, 120, 40, "positive")
    service.new_object(sid)
    with pytest.raises(DemoError, match="memory limit"):
        service.click(sid, 80, 120, "positive")
    session = service.get_session(sid)
    assert [len(o.points) for o in session.objects] == [1, 1, 0]  # the refused click changed nothing
    assert session.nbytes() <= service.limits.max_session_bytes
    timing = service.segment_everything(sid, points_per_side=8)
    assert len(service.get_session(sid).objects) <= 6
    assert "masks" in str(timing)


def test_video_track_everything(video_service, clip):
    """The video tab's "Track everything": objects found without clicks, masks on every frame,
    ids kept from frame to frame; bad settings refused. Thresholds 0: the random model's masks
    would all fail the default ones."""
    from segapp.service import VideoService

    video = VideoService(DemoService(video_service.runtime.model,
                                     amg_options={"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}))
    sid = video.create_session()
    video.open_video(sid, clip)
    video.click(sid, 0, 30, 35)  # replaced by track everything
    with pytest.raises(DemoError, match="K of at least 1"):
        list(video.track_everything(sid, every=0))
    with pytest.raises(DemoError, match="points per side"):
        list(video.track_everything(sid, every=2, points_per_side=0))
    steps = list(video.track_everything(sid, every=2, points_per_side=4, preview_interval=0.0))
    assert [s[0] for s in steps] == list(range(6)) and [s[1] for s in steps] == list(range(1, 7))
    assert all(s[3] is not None for s in steps)
    session = video.get_session(sid)
    ids = [o.obj_id for o in session.objects]
    assert ids and ids == sorted(ids) and ids[0] == 1 and session.prompts == {}
    assert set(session.results) == set(range(6))
    for frame_idx in range(6):
        assert set(session.results[frame_idx]) <= set(ids)
    assert "track everything" in session.timings[0].step
    video.close_session(sid)
