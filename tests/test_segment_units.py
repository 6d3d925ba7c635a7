"""Units of `segapp segment`: input discovery, prompts files, and the atomic writers."""
from __future__ import annotations

import json

import numpy as np
import pytest

from segapp.batch import inputs, outputs, prompts
from segapp.formats.id_maps import instance_id_map


# ---------------------------------------------------------------------------- inputs
def test_discover_mirrors_tree_and_classifies(tmp_path):
    root = tmp_path / "data"
    (root / "sub" / "deeper").mkdir(parents=True)
    for name in ("a.jpg", "a.png", "b.PNG", "sub/c.webp", "sub/deeper/v.mp4", "notes.txt", ".hidden.jpg"):
        (root / name).write_bytes(b"x")
    (root / ".git").mkdir()
    (root / ".git" / "x.jpg").write_bytes(b"x")
    out = root / "out"
    out.mkdir()
    (out / "old.png").write_bytes(b"x")
    found = inputs.discover([root], exclude=[out])
    assert [i.rel for i in found] == ["a.jpg", "a.png", "b.PNG", "notes.txt", "sub/c.webp", "sub/deeper/v.mp4"]
    kinds = {i.rel: i.kind for i in found}
    assert kinds == {"a.jpg": "image", "a.png": "image", "b.PNG": "image", "notes.txt": "unsupported",
                     "sub/c.webp": "image", "sub/deeper/v.mp4": "video"}
    stems = {i.rel: i.stem for i in found}
    # a.jpg and a.png share a stem: they keep their extensions so their outputs differ
    assert stems["a.jpg"] == "a.jpg" and stems["a.png"] == "a.png" and stems["sub/c.webp"] == "sub/c"
    assert len({i.key for i in found}) == len(found)


def test_discover_files_and_folders_share_a_root(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    (tmp_path / "x" / "1.png").write_bytes(b"x")
    (tmp_path / "y" / "2.png").write_bytes(b"x")
    found = inputs.discover([tmp_path / "x", tmp_path / "y" / "2.png"])
    assert [i.rel for i in found] == ["x/1.png", "y/2.png"]
    with pytest.raises(FileNotFoundError, match="nope"):
        inputs.discover([tmp_path / "nope"])


def test_image_ids_are_stable_and_distinct():
    assert inputs.image_id("a/b.jpg") == inputs.image_id("a/b.jpg")
    ids = {inputs.image_id("v.mp4", f) for f in range(1000)} | {inputs.image_id("v.mp4")}
    assert len(ids) == 1001 and all(0 < i < 2**31 for i in ids)


# ---------------------------------------------------------------------------- prompts
def test_prompts_schema_parses_objects_and_frames():
    p = prompts.parse({
        "default": "everything",
        "images": {"a.jpg": [{"box": [1, 2, 30, 40]}, {"id": 7, "points": [[5, 6], [7, 8]], "labels": [1, 0]}]},
        "videos": {"v.mp4": {"3": [{"id": 2, "points": [[1, 1]], "labels": [1]}], "0": [{"box": [0, 0, 4, 4]}]}},
    })
    objs = p.for_image("deep/a.jpg")  # matched by file name
    assert [o.obj_id for o in objs] == [1, 7]
    np.testing.assert_array_equal(objs[0].box, [1, 2, 30, 40])
    np.testing.assert_array_equal(objs[1].labels, [1, 0])
    assert list(p.for_video("v.mp4")) == [0, 3]
    assert p.for_image("other.jpg") is None and p.default == "everything"
    assert p.unmatched(["x/a.jpg"]) == ["v.mp4"]


@pytest.mark.parametrize("data, message", [
    ([], "top level"),
    ({"imgs": {}}, "unknown key"),
    ({"images": {"a.jpg": [{"box": [1, 2, 3]}]}}, r"images\['a.jpg'\]\[0\].box: expected 4 numbers"),
    ({"images": {"a.jpg": [{"box": [5, 5, 1, 1]}]}}, "x1 < x0"),
    ({"images": {"a.jpg": [{"points": [[1, 2]], "labels": [1, 1]}]}}, "1 points but 2 labels"),
    ({"images": {"a.jpg": [{"points": [[1, 2]], "labels": [3]}]}}, "foreground"),
    ({"images": {"a.jpg": [{}]}}, "needs"),
    ({"images": {"a.jpg": [{"id": 70000, "box": [0, 0, 1, 1]}]}}, "1..65535"),
    ({"images": {"a.jpg": [{"id": 2, "box": [0, 0, 1, 1]}, {"id": 2, "box": [0, 0, 1, 1]}]}}, "used twice"),
    ({"images": {"a.jpg": [{"box": [0, 0, "x", 1]}]}}, "numbers"),
    ({"videos": {"v.mp4": {"first": [{"box": [0, 0, 1, 1]}]}}}, "not a frame index"),
    ({"default": "all"}, "default"),
])
def test_prompts_errors_name_the_entry(data, message):
    with pytest.raises(prompts.PromptsError, match=message):
        prompts.parse(data)


def test_prompts_load_reports_bad_json(tmp_path):
    bad = tmp_path / "p.json"
    bad.write_text("{oops")
    with pytest.raises(prompts.PromptsError, match="not valid JSON"):
        prompts.load(bad)


def test_coco_annotations_become_box_prompts(tmp_path):
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({
        "images": [{"id": 42, "file_name": "x.jpg"}, {"id": 43, "file_name": "y.jpg"}],
        "annotations": [{"id": 2, "image_id": 42, "bbox": [10, 20, 30, 40], "category_id": 5},
                        {"id": 1, "image_id": 42, "bbox": [0, 0, 5, 5], "category_id": 3},
                        {"id": 3, "image_id": 42, "bbox": [0, 0, 9, 9], "category_id": 3, "iscrowd": 1}],
        "categories": [{"id": 3, "name": "c"}, {"id": 5, "name": "e"}]}))
    p = prompts.load(path)
    assert p.source == "coco" and p.image_id("sub/x.jpg") == 42
    objs = p.for_image("x.jpg")
    assert [(o.obj_id, o.category_id) for o in objs] == [(1, 3), (2, 5)]  # by annotation id; crowd left out
    np.testing.assert_array_equal(objs[1].box, [10, 20, 40, 60])
    assert p.for_image("y.jpg") == []


# ---------------------------------------------------------------------------- writers
def test_id_png_is_8_bit_up_to_255_and_16_bit_above(tmp_path):
    import cv2

    small = np.arange(256, dtype=np.uint16).reshape(16, 16)
    big = np.arange(300, dtype=np.uint16).reshape(15, 20)
    for name, ids, depth in (("small", small, np.uint8), ("big", big, np.uint16)):
        path = tmp_path / f"{name}.png"
        outputs.atomic_write(path, outputs.encode_id_png(ids))
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert raw.dtype == depth
        np.testing.assert_array_equal(outputs.read_id_png(path), ids)


def test_paint_resolves_overlaps_in_favour_of_smaller_objects():
    big = np.zeros((10, 10), bool)
    big[:, :] = True
    small = np.zeros((10, 10), bool)
    small[2:4, 2:4] = True
    id_map = instance_id_map([small, big], (10, 10), [5, 9])
    assert (id_map[2:4, 2:4] == 5).all() and (id_map == 9).sum() == 96


def test_more_than_255_objects_end_to_end_writer(tmp_path):
    """300 objects: a 16-bit PNG and one COCO mask per object equal to the PNG's pixels."""
    from pycocotools import mask as mask_utils

    h, w = 30, 40
    id_map = np.zeros((h, w), np.uint16)
    id_map.reshape(-1)[:300] = np.arange(1, 301)
    seg = outputs.Segmentation(id_map, [{"instance_id": i, "score": 0.5} for i in range(1, 301)])
    data = outputs.encode_id_png(seg.id_map)
    outputs.atomic_write(tmp_path / "m.png", data)
    back = outputs.read_id_png(tmp_path / "m.png")
    anns = outputs.coco_annotations(seg, image_id=7)
    assert len(anns) == 300
    for ann in anns[::37]:
        np.testing.assert_array_equal(mask_utils.decode(ann["segmentation"]).astype(bool),
                                      back == ann["instance_id"])


def test_atomic_write_leaves_no_temporaries(tmp_path):
    target = tmp_path / "a" / "b.bin"
    outputs.atomic_write(target, b"one")
    outputs.atomic_write(target, b"two")
    assert target.read_bytes() == b"two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["b.bin"]
    (target.parent / f".x{outputs.TMP_SUFFIX}").write_bytes(b"half")
    assert outputs.sweep_temporaries(tmp_path) == 1


def test_overlay_tints_only_objects():
    rgb = np.full((4, 4, 3), 100, np.uint8)
    ids = np.zeros((4, 4), np.uint16)
    ids[0, 0] = 3
    out = outputs.overlay(rgb, ids)
    assert (out[1:, :] == 100).all() and not (out[0, 0] == 100).all()
