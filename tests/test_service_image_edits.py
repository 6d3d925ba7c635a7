"""The image tab's service side of issue 16: segment everything adds (never wipes), actions
that cannot act answer with a warning, low-quality masks are flagged, class labels, and
downloads that follow every change (revision counter)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from segapp.service import DemoError, ImageService, Limits, Runtime, examples, exports
from segapp.service.types import LOW_QUALITY_IOU
from tiny_models import tiny_model

PERMISSIVE_AMG = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
STRICT_AMG = {"pred_iou_thresh": 0.99, "stability_score_thresh": 0.99}


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def image():
    return examples.synthetic_image(160)


@pytest.fixture()
def service(model):
    return ImageService(Runtime(model, amg_options=PERMISSIVE_AMG))


@pytest.fixture()
def sid(service, image):
    sid = service.create_session()
    service.set_image(sid, image, name="shapes.png")
    return sid


def test_segment_everything_adds_objects_and_keeps_the_existing_ones(service, sid):
    service.click(sid, 80, 90, "positive")
    service.rename_object(sid, 1, "ball")
    mine = service.get_session(sid).objects
    service.segment_everything(sid, points_per_side=4)
    first = service.get_session(sid).objects
    assert first[:1] == mine and len(first) > 1
    service.segment_everything(sid, points_per_side=4)  # again: adds again
    second = service.get_session(sid).objects
    assert second[:len(first)] == first and len(second) == 2 * len(first) - 1
    assert len({o.obj_id for o in second}) == len(second)
    assert service.undo(sid) and service.get_session(sid).objects == first


def test_segment_everything_with_no_mask_warns_why(model, image):
    service = ImageService(Runtime(model, amg_options=STRICT_AMG))
    sid = service.create_session()
    service.set_image(sid, image)
    service.click(sid, 80, 90, "positive")
    timing = service.segment_everything(sid, points_per_side=2)
    assert timing.step == "segment everything (0 masks)"
    assert timing.warning.startswith("No masks found by test_tiny")
    assert "(predicted IoU > 0.99, stability >= 0.99)" in timing.warning and timing.warning in str(timing)
    assert len(service.get_session(sid).objects) == 1  # the clicked object stays


def test_segment_everything_beyond_the_memory_limit_warns(model, image):
    probe = ImageService(model)
    sid = probe.create_session()
    probe.set_image(sid, image)
    fixed = probe.get_session(sid).fixed_nbytes()
    service = ImageService(Runtime(model, limits=Limits(max_session_bytes=fixed + 3 * 160 * 160 + 10),
                                   amg_options=PERMISSIVE_AMG))
    sid = service.create_session()
    service.set_image(sid, image)
    service.click(sid, 30, 30, "positive")  # three candidate planes: the session is full
    timing = service.segment_everything(sid, points_per_side=4)
    assert timing.step.startswith("segment everything (kept the 0 largest of ")
    assert "no room for more masks" in timing.warning
    assert len(service.get_session(sid).objects) == 1


def test_actions_that_cannot_act_answer_with_a_warning(service, sid):
    for action, warning in ((service.undo, "nothing to undo"), (service.redo, "nothing to redo"),
                            (service.delete_object, "select an object to delete"),
                            (service.clear, "nothing to clear"),
                            (lambda s: service.choose_candidate(s, 0), "select an object with a mask first")):
        response = action(sid)
        assert not response and response.warning == warning and response.revision == 1
    service.click(sid, 80, 90, "positive")
    deleted = service.delete_object(sid)  # the selected object
    assert deleted and deleted.warning == "" and service.get_session(sid).objects == ()
    with pytest.raises(DemoError, match="no object with id 7"):
        service.delete_object(sid, 7)


def test_low_quality_masks_are_flagged_with_a_hint(service, sid, monkeypatch):
    service.click(sid, 80, 90, "positive")
    session = service.get_session(sid)
    obj = session.objects[0]
    assert obj.score == max(obj.scores)
    assert obj.low_quality == (obj.score < LOW_QUALITY_IOU)
    # Force the scores: a chosen IoU of 0.12 is flagged, 0.9 is not.
    real_predict = service.runtime.predict
    monkeypatch.setattr(service.runtime, "predict", lambda *a: (real_predict(*a)[0], np.array([0.05, 0.12, 0.1])))
    service.new_object(sid, "blob")
    service.click(sid, 20, 20, "positive")
    blob = service.get_session(sid).selected
    assert blob.low_quality and blob.score == pytest.approx(0.12)
    assert blob.quality_hint == ("blob: predicted IoU 0.12 is low; add a click: positive on a part it misses, "
                                 "negative on a part it wrongly covers")
    assert blob.quality_hint in service.get_session(sid).quality_hints
    monkeypatch.setattr(service.runtime, "predict", lambda *a: (real_predict(*a)[0], np.array([0.9, 0.2, 0.1])))
    service.click(sid, 25, 20, "positive")
    assert not service.get_session(sid).selected.low_quality and service.get_session(sid).selected.quality_hint == ""


def test_class_labels_are_listed_and_undoable(service, sid, image):
    service.click(sid, 80, 90, "positive")
    service.new_object(sid)
    service.click(sid, 150, 60, "positive")
    assert service.set_label(sid, 1, " circle ")
    assert service.set_label(sid, 2, "square")
    same = service.set_label(sid, 2, "square")
    assert not same and "unchanged" in same.warning
    assert [o.label for o in service.get_session(sid).objects] == ["circle", "square"]
    assert service.labels(sid) == ["circle", "square"]
    assert service.undo(sid) and service.get_session(sid).objects[1].label == ""
    service.set_image(sid, image[::-1].copy())  # a new image: the labels are still offered
    assert service.labels(sid) == ["circle", "square"]
    with pytest.raises(DemoError, match="limited to 100 characters"):
        service.set_label(sid, 99, "x" * 101)


def test_downloads_follow_every_change(service, sid, tmp_path):
    assert service.downloads(sid, tmp_path).files == {}  # nothing segmented yet
    timing = service.click(sid, 80, 90, "positive")
    first = service.downloads(sid, tmp_path)
    assert first.revision == timing.revision == service.get_session(sid).revision
    doc = json.loads(first.files["coco_json"].read_text())
    assert [a["object_id"] for a in doc["annotations"]] == [1]
    assert service.downloads(sid, tmp_path) is first  # unchanged: not written again
    service.new_object(sid)
    service.click(sid, 150, 60, "positive")
    second = service.downloads(sid, tmp_path)
    assert second.revision > first.revision
    doc = json.loads(second.files["coco_json"].read_text())
    assert [a["object_id"] for a in doc["annotations"]] == [1, 2]
    ids = exports.decode_rle(doc["annotations"][1]["segmentation"])
    np.testing.assert_array_equal(ids, service.get_session(sid).objects[1].mask)
    undone = service.undo(sid)
    third = service.downloads(sid, tmp_path)
    assert third.revision == undone.revision > second.revision
    assert [a["object_id"] for a in json.loads(third.files["coco_json"].read_text())["annotations"]] == [1]


def test_coco_download_carries_the_class_labels_as_categories(service, sid, tmp_path):
    for x, y in ((80, 90), (150, 60), (30, 140)):
        service.select_object(sid, None)
        service.click(sid, x, y, "positive")
    service.set_label(sid, 1, "circle")
    service.set_label(sid, 3, "circle")  # object 2 stays unlabelled
    doc = json.loads(service.downloads(sid, tmp_path).files["coco_json"].read_text())
    assert doc["categories"] == [{"id": 1, "name": "circle", "supercategory": "object"},
                                 {"id": 2, "name": "object", "supercategory": "object"}]
    assert [(a["object_id"], a["category_id"]) for a in doc["annotations"]] == [(1, 1), (2, 2), (3, 1)]


def test_downloads_add_palette_png_coco_polygons_and_yolo_seg(service, sid, tmp_path):
    from PIL import Image

    from segapp.formats.polygons import polygons_to_mask

    service.set_box(sid, (10, 10, 150, 150))
    service.select_object(sid, None)
    service.click(sid, 80, 90, "positive")
    service.set_label(sid, 2, "circle")
    objs = service.get_session(sid).objects
    files = service.downloads(sid, tmp_path).files
    assert {p.name for p in files.values()} == {
        "shapes_instances.png", "shapes_coco_rle.json", "shapes_overlay.png", "shapes_palette.png",
        "shapes_coco_polygons.json", "shapes.txt", "classes.txt"}
    palette = Image.open(files["palette_png"])
    ids = np.asarray(palette)
    assert palette.mode == "P" and set(np.unique(ids)) <= {0, 1, 2}
    np.testing.assert_array_equal(ids, exports.instance_id_map([o.mask for o in objs], (160, 160), [1, 2]))
    assert tuple(palette.getpalette()[6:9]) == objs[1].color  # id 2 shows in object 2's colour
    doc = json.loads(files["coco_polygons_json"].read_text())
    assert doc["info"]["format"] == "COCO, segmentation as polygons"
    ring_mask = polygons_to_mask(doc["annotations"][1]["segmentation"], (160, 160))
    inter = (ring_mask & objs[1].mask).sum()
    assert inter / (ring_mask | objs[1].mask).sum() > 0.9
    assert files["yolo_classes"].read_text() == "object\ncircle\n"
    lines = files["yolo_txt"].read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["0", "1"]
    coords = np.array(lines[1].split()[1:], float)
    assert len(coords) % 2 == 0 and 0 <= coords.min() and coords.max() <= 1
    with pytest.raises(DemoError, match="unknown download 'tiff'"):
        service.export(sid, tmp_path, kinds=("tiff",))
