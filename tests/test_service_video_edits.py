"""The video tab's editing, service side (issue 16): undo/redo, delete, rename, class labels,
clear, box prompts, Stop during propagation, the objects prompted after the last propagation,
low-quality flags and the status's timings. Each test asserts what the user sees: masks on
frames, warnings, exports."""
from __future__ import annotations

import json

import numpy as np
import pytest

from segapp.service import DemoError, ImageService, Runtime, VideoService, exports
from segapp.service.types import LOW_QUALITY_IOU, QualityFlag
from test_demo_service import clip  # noqa: F401 (a 6-frame synthetic MP4)
from tiny_models import tracking_model


@pytest.fixture(scope="module")
def video():
    """A VideoService on a test model whose object-score head says "object present" (random
    weights otherwise predict "no object" everywhere and every mask would be empty)."""
    return VideoService(Runtime(tracking_model(add=20.0)))


@pytest.fixture()
def sid(video, clip):
    sid = video.create_session()
    video.open_video(sid, clip)
    yield sid
    video.close_session(sid)


def test_undo_and_redo_restore_prompts_and_masks(video, sid):
    session = video.get_session(sid)
    empty = video.undo(sid)
    assert not empty and empty.warning == "nothing to undo"
    assert video.redo(sid).warning == "nothing to redo"
    video.click(sid, 0, 30, 35)
    first = session.mask(0, 1).copy()
    video.click(sid, 0, 60, 60, positive=False)
    assert session.prompts[(1, 0)].labels == (1, 0)
    assert video.undo(sid)
    assert session.prompts[(1, 0)].points == ((30.0, 35.0),)
    np.testing.assert_array_equal(session.mask(0, 1), first)
    assert video.redo(sid) and session.prompts[(1, 0)].labels == (1, 0)
    assert video.undo(sid) and video.undo(sid)
    assert session.objects == [] and session.prompts == {} and session.mask(0, 1) is None
    # The tracking state follows the history: a click now starts object 1 again, alone.
    video.click(sid, 2, 30, 35)
    steps = list(video.propagate(sid, "forward", start_frame=2))
    assert [s[0] for s in steps] == [2, 3, 4, 5]
    assert all(set(session.results[f]) == {1} for f in (2, 3, 4, 5))


def test_delete_with_nothing_selected_warns_and_delete_removes_every_mask(video, sid, tmp_path):
    session = video.get_session(sid)
    video.click(sid, 0, 30, 35)
    video.new_object(sid)
    video.click(sid, 0, 70, 20)
    list(video.propagate(sid, "forward", start_frame=0))
    video.select_object(sid, None)
    refused = video.delete_object(sid)
    assert not refused and refused.warning == "select an object to delete"
    assert [o.obj_id for o in session.objects] == [1, 2]
    video.select_object(sid, 2)
    assert video.delete_object(sid)
    assert [o.obj_id for o in session.objects] == [1] and session.selected is None
    assert all(set(masks) == {1} for masks in session.results.values())
    doc = json.loads(video.export(sid, tmp_path)["coco_json"].read_text())
    assert {a["object_id"] for a in doc["annotations"]} == {1}
    assert video.undo(sid)
    assert [o.obj_id for o in session.objects] == [1, 2] and set(session.results[5]) == {1, 2}
    with pytest.raises(DemoError, match="no object with id 9"):
        video.delete_object(sid, 9)


def test_rename_label_and_the_labels_used_so_far(video, sid, tmp_path):
    video.click(sid, 0, 30, 35)
    assert video.rename_object(sid, 1, "  red ball ")
    assert video.get_session(sid).objects[0].name == "red ball"
    with pytest.raises(DemoError, match="name cannot be empty"):
        video.rename_object(sid, 1, "   ")
    assert video.set_label(sid, 1, "ball")
    unchanged = video.set_label(sid, 1, "ball")
    assert not unchanged and "unchanged" in unchanged.warning
    video.new_object(sid)
    video.click(sid, 0, 70, 20)
    video.set_label(sid, 2, "box")
    video.set_label(sid, 2, "crate")
    assert video.labels(sid) == ["ball", "box", "crate"]  # "box" is still in the history
    assert video.undo(sid) and video.get_session(sid).objects[1].label == "box"


def test_clear_is_undoable_and_warns_when_empty(video, sid):
    session = video.get_session(sid)
    nothing = video.clear(sid)
    assert not nothing and nothing.warning == "nothing to clear"
    video.click(sid, 1, 30, 35)
    assert video.clear(sid)
    assert session.objects == [] and session.results == {} and session.prompts == {}
    with pytest.raises(DemoError, match="before propagating"):
        list(video.propagate(sid))
    assert video.undo(sid) and set(session.results) == {1} and session.mask(1, 1).any()
    assert len(list(video.propagate(sid, "forward", start_frame=1))) == 5


def test_box_prompt_decodes_a_mask_and_is_drawn(video, sid):
    session = video.get_session(sid)
    timing = video.set_box(sid, 3, (60, 70, 10, 20))  # corners in any order
    assert "box on frame 3" in str(timing)
    assert session.prompts[(1, 3)].box == (10.0, 20.0, 60.0, 70.0)
    assert session.mask(3, 1) is not None and session.mask(3, 1).any()
    frame = video.frame(sid, 3)
    assert tuple(frame[20, 35]) == exports.BOX_COLOR  # the box's top edge
    video.click(sid, 3, 30, 40)  # a click keeps the box
    assert session.prompts[(1, 3)].box == (10.0, 20.0, 60.0, 70.0) and session.prompts[(1, 3)].points
    with pytest.raises(DemoError, match="outside the 96x96 video"):
        video.set_box(sid, 3, (0, 0, 200, 50))


def test_stop_ends_propagation_between_frames(video, sid):
    session = video.get_session(sid)
    video.click(sid, 0, 30, 35)
    steps = video.propagate(sid, "forward", start_frame=0)
    frame_idx, done, total = next(steps)[:3]
    assert (frame_idx, done, total) == (0, 1, 6)
    assert video.stop(sid)  # while the propagation holds the session
    rest = list(steps)
    assert rest == []
    assert set(session.results) == {0}
    assert session.timings[0].step == "propagate forward (1 of 6 frames)"
    assert "stopped" in session.timings[0].warning
    assert [o.obj_id for o in video.untracked_objects(sid)] == [1]  # a stopped run tracks nothing for good
    assert len(list(video.propagate(sid, "forward", start_frame=0))) == 6  # the next run is not stopped


def test_objects_prompted_after_the_last_propagation_are_listed(video, sid):
    assert video.untracked_objects(sid) == [] and video.untracked_warning(sid) == ""
    video.click(sid, 0, 30, 35)
    assert [o.obj_id for o in video.untracked_objects(sid)] == [1]
    list(video.propagate(sid, "both", start_frame=0))
    assert video.untracked_objects(sid) == []
    video.new_object(sid, "late one")
    assert video.untracked_objects(sid) == []  # no prompts yet: nothing to track
    video.click(sid, 4, 70, 20)
    assert [o.name for o in video.untracked_objects(sid)] == ["late one"]
    assert "not propagated since their last prompts: late one" in video.untracked_warning(sid)
    video.select_object(sid, 1)
    video.click(sid, 2, 40, 40, positive=False)  # a correction counts as a change too
    assert [o.obj_id for o in video.untracked_objects(sid)] == [1, 2]
    video.undo(sid)
    assert [o.obj_id for o in video.untracked_objects(sid)] == [2]
    list(video.propagate(sid, "both", start_frame=0))
    assert video.untracked_objects(sid) == []


def test_video_coco_download_carries_the_class_labels_as_categories(video, sid, tmp_path):
    video.click(sid, 0, 30, 35)
    video.new_object(sid)
    video.click(sid, 0, 70, 20)
    video.set_label(sid, 2, "car")
    list(video.propagate(sid, "forward", start_frame=0))
    doc = json.loads(video.export(sid, tmp_path)["coco_json"].read_text())
    assert doc["categories"] == [{"id": 1, "name": "object", "supercategory": "object"},
                                 {"id": 2, "name": "car", "supercategory": "object"}]
    pairs = {(a["image_id"], a["object_id"], a["category_id"]) for a in doc["annotations"]}
    assert pairs == {(f + 1, o, o) for f in range(6) for o in (1, 2)}


def test_stop_ends_track_everything_between_frames(video, clip):
    auto = VideoService(Runtime(video.runtime.model, amg_options={"pred_iou_thresh": 0.0,
                                                                   "stability_score_thresh": 0.0}))
    sid = auto.create_session()
    auto.open_video(sid, clip)
    steps = auto.track_everything(sid, every=2, points_per_side=4)
    assert next(steps)[:3] == (0, 1, 6)
    auto.stop(sid)
    assert list(steps) == []
    session = auto.get_session(sid)
    assert set(session.results) == {0}
    assert session.timings[0].warning == "stopped after 1 of 6 frames"
    assert auto.undo(sid) and session.results == {} and session.objects == []
    auto.close_session(sid)


def test_low_quality_video_masks_are_flagged_with_the_image_tabs_hint(video, sid, monkeypatch):
    """As on the image tab (one threshold, one hint): an object whose latest prompt gave a mask
    the model rates below LOW_QUALITY_IOU is flagged, naming the frame; a better click clears it."""
    session = video.get_session(sid)
    video.click(sid, 0, 30, 35)
    (obj,) = session.objects
    assert obj.score == pytest.approx(video.predictor.prompt_iou(session.state, 0, 1)) and obj.score_frame == 0
    assert isinstance(obj, QualityFlag) and obj.low_quality == (obj.score < LOW_QUALITY_IOU)
    images = ImageService(video.runtime)  # the same click on the same picture: the image tab's score
    image_sid = images.create_session()
    images.set_image(image_sid, session.state.frames.get(0))
    images.click(image_sid, 30, 35, "positive")
    assert obj.score == pytest.approx(images.get_session(image_sid).objects[0].score, abs=1e-3)
    monkeypatch.setattr(video.predictor, "prompt_iou", lambda *a: 0.12)
    video.new_object(sid, "blob")
    video.click(sid, 3, 60, 60)
    blob = session.get_object(2)
    assert blob.low_quality and blob.score_frame == 3
    assert blob.quality_hint == ("blob on frame 3: predicted IoU 0.12 is low; add a click: positive on a part it "
                                 "misses, negative on a part it wrongly covers")
    assert blob.quality_hint in session.quality_hints
    list(video.propagate(sid, "forward", start_frame=0))
    assert session.get_object(2).low_quality  # tracking keeps the flag of the prompt
    monkeypatch.setattr(video.predictor, "prompt_iou", lambda *a: 0.9)
    video.click(sid, 3, 62, 60)
    assert not session.get_object(2).low_quality and session.get_object(2).quality_hint == ""
    assert blob.quality_hint not in session.quality_hints
    assert video.undo(sid) and session.get_object(2).low_quality  # the flag follows the history


def test_status_timing_is_shown_only_at_the_revision_it_made(video, sid):
    """The video tab's status (widgets.timing_text, shared with the image tab) drops a step's
    timing once anything changed since: an undo, a rename, a delete."""
    from segapp.demo.widgets import timing_text

    session = video.get_session(sid)
    assert timing_text(session) == ""
    video.click(sid, 0, 30, 35)
    assert timing_text(session).startswith("click on frame 0: ")
    video.click(sid, 0, 60, 60, positive=False)
    assert video.undo(sid)
    assert timing_text(session) == ""  # the undone click's timing is not shown
    list(video.propagate(sid, "forward", start_frame=0))
    assert timing_text(session).startswith("propagate forward (6 frames): ")
    video.rename_object(sid, 1, "crate")
    assert timing_text(session) == ""
    video.click(sid, 2, 30, 35)
    assert timing_text(session).startswith("click on frame 2: ")
    video.delete_object(sid)
    assert timing_text(session) == ""
