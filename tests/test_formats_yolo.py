"""segapp.formats.yolo: YOLO-seg label files and the class list, written and parsed back."""
from __future__ import annotations

import numpy as np
import pytest
from formats_data import coco_val_images, fill_holes, iou

from segapp.formats import coco, yolo
from segapp.formats.polygons import polygons_to_mask


def test_label_file_lines_classes_and_normalised_coordinates(tmp_path):
    hw = (40, 80)
    square = np.zeros(hw, bool)
    square[10:20, 20:40] = True
    two_pieces = np.zeros(hw, bool)
    two_pieces[0:4, 0:4] = True
    two_pieces[30:40, 60:80] = True
    labels = ["car", None, "car"]
    masks = [square, np.zeros(hw, bool), two_pieces]  # the empty object gets no line
    (tmp_path / "classes.txt").write_text(yolo.classes_text(yolo.class_list(labels)))
    (tmp_path / "img.txt").write_text(yolo.label_lines(masks, labels))

    assert (tmp_path / "classes.txt").read_text() == "car\nobject\n"
    lines = (tmp_path / "img.txt").read_text().splitlines()
    assert len(lines) == 2
    assert lines[0].split()[0] == "0" and lines[1].split()[0] == "0"
    corners = {tuple(map(float, p)) for p in np.array(lines[0].split()[1:]).reshape(-1, 2)}
    assert corners == {(0.25, 0.25), (0.5, 0.25), (0.5, 0.5), (0.25, 0.5)}  # pixel edges / (W, H)
    assert all(len(v.split(".")[1]) == yolo.DECIMALS for v in lines[0].split()[1:])

    read = yolo.read_label_lines((tmp_path / "img.txt").read_text(), hw)
    assert [index for index, _ in read] == [0, 0]
    np.testing.assert_array_equal(polygons_to_mask([read[0][1]], hw), square)
    np.testing.assert_array_equal(polygons_to_mask([read[1][1]], hw), two_pieces)  # one ring, both pieces
    assert yolo.read_classes((tmp_path / "classes.txt").read_text()) == ["car", "object"]


def test_class_indices_follow_the_coco_categories_and_a_given_class_list():
    labels = ["b", "a", None, "a"]
    cats = coco.categories_from_labels(labels)
    assert yolo.class_list(labels) == [c["name"] for c in cats] == ["b", "a", "object"]
    square = np.zeros((10, 10), bool)
    square[2:6, 2:6] = True
    text = yolo.label_lines([square] * 4, labels)
    assert [int(line.split()[0]) for line in text.splitlines()] == [c - 1 for c in coco.category_ids(labels, cats)]
    # a data set's class list: indices refer to it, a label outside it is named
    assert yolo.label_lines([square], ["a"], classes=["x", "a"]).split()[0] == "1"
    with pytest.raises(ValueError, match="class label 'b' is not among the categories"):
        yolo.label_lines([square], ["b"], classes=["x", "a"])
    assert yolo.label_lines([square], None).split()[0] == "0"


def test_bad_files_and_names_are_reported_with_the_line():
    with pytest.raises(ValueError, match="line 2: expected a class index and numbers"):
        yolo.read_label_lines("0 0 0 1 0 1 1\ncat 0 0 1 0 1 1\n", (10, 10))
    with pytest.raises(ValueError, match="line 1: expected a class index >= 0 and at least 3"):
        yolo.read_label_lines("0 0.1 0.1 0.2 0.2\n", (10, 10))
    with pytest.raises(ValueError, match="line 1: coordinates must be normalised"):
        yolo.read_label_lines("0 0 0 12 0 12 8\n", (10, 10))
    with pytest.raises(ValueError, match="a class name must be one non-empty line"):
        yolo.classes_text(["a", "b\nc"])
    with pytest.raises(ValueError, match="2 masks but 1 labels"):
        yolo.label_lines([np.ones((3, 3), bool)] * 2, ["a"])


def test_coco_objects_round_trip_through_yolo_text(shared_data):
    """Real COCO val objects -> YOLO-seg text -> parsed and drawn: each object's filled mask
    comes back (pieces joined into one ring, six decimals of normalised coordinates)."""
    ious, filled = [], []
    for hw, masks, names in coco_val_images(shared_data, 8):
        classes = yolo.class_list(names)
        read = yolo.read_label_lines(yolo.label_lines(masks, names), hw)
        assert [classes[index] for index, _ in read] == names
        for (_, ring), mask in zip(read, masks):
            drawn = polygons_to_mask([ring], hw)
            ious.append(iou(drawn, mask))
            filled.append(iou(drawn, fill_holes(mask)))
    assert len(ious) > 60
    assert np.mean(ious) > 0.999 and min(ious) > 0.95 and np.mean(filled) > 0.9995
