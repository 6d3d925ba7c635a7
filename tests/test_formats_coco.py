"""segapp.formats.coco: categories from class labels, RLE or polygon segmentations, documents
that pycocotools reads back."""
from __future__ import annotations

import json

import numpy as np
import pytest
from formats_data import coco_val_images, fill_holes, iou

from segapp.formats import coco


def two_objects(hw=(40, 50)):
    a = np.zeros(hw, bool)
    a[5:20, 5:30] = True
    a[10:14, 10:14] = False  # a hole: RLE keeps it, polygons fill it
    b = np.zeros(hw, bool)
    b[25:35, 30:45] = True
    b[2, 48] = True  # a sprinkle: polygons drop it
    return [a, b]


def write_and_load(tmp_path, doc):
    from pycocotools.coco import COCO

    path = tmp_path / "doc.json"
    path.write_text(json.dumps(doc))
    return json.loads(path.read_text()), COCO(str(path))


def test_categories_are_labels_in_first_seen_order_and_unlabelled_is_object():
    labels = ["dog", None, " cat ", "dog", "", "object", "Cat"]
    cats = coco.categories_from_labels(labels)
    assert [(c["id"], c["name"]) for c in cats] == [(1, "dog"), (2, "object"), (3, "cat"), (4, "Cat")]
    assert coco.category_ids(labels, cats) == [1, 2, 3, 1, 2, 2, 4]
    assert coco.categories_from_labels([]) == []
    with pytest.raises(ValueError, match="class label 'bird' is not among the categories"):
        coco.category_ids(["bird"], cats)
    with pytest.raises(ValueError, match="a class label must be text or None, got 3"):
        coco.label_name(3)


def test_document_with_labels_and_polygons_reads_back_with_pycocotools(tmp_path):
    masks = two_objects()
    labels = ["person", None]
    cats = coco.categories_from_labels(labels)
    anns = coco.annotations(masks, labels=labels, categories=cats, segmentation="polygons", names=["a", "b"])
    image = {"id": 1, "width": 50, "height": 40, "file_name": "x.png"}
    doc, api = write_and_load(tmp_path, coco.document([image], anns, "test", categories=cats,
                                                      segmentation="polygons"))
    assert doc["info"]["format"] == "COCO, segmentation as polygons"
    assert doc["categories"] == [{"id": 1, "name": "person", "supercategory": "object"},
                                 {"id": 2, "name": "object", "supercategory": "object"}]
    first, second = doc["annotations"]
    assert (first["category_id"], second["category_id"]) == (1, 2)
    assert all(isinstance(ring, list) and len(ring) >= 6 for ring in first["segmentation"])
    assert len(second["segmentation"]) == 1  # the one-pixel sprinkle is dropped
    np.testing.assert_array_equal(api.annToMask(first).astype(bool), fill_holes(masks[0]))
    expected = masks[1].copy()
    expected[2, 48] = False
    np.testing.assert_array_equal(api.annToMask(second).astype(bool), expected)
    # area and bbox are those of what the polygons cover
    assert first["area"] == int(fill_holes(masks[0]).sum()) and first["bbox"] == [5, 5, 25, 15]
    assert second["area"] == 150 and second["bbox"] == [30, 25, 15, 10]
    assert api.getCatIds(catNms=["person"]) == [1]


def test_rle_stays_the_default_and_exact(tmp_path):
    masks = two_objects()
    anns = coco.annotations(masks, labels=["cat", "cat"])
    doc, api = write_and_load(tmp_path, coco.document(
        [{"id": 1, "width": 50, "height": 40, "file_name": "x.png"}], anns, "t",
        categories=coco.categories_from_labels(["cat"])))
    assert doc["info"]["format"] == "COCO, segmentation as compressed RLE"
    assert [a["category_id"] for a in doc["annotations"]] == [1, 1]
    for ann, mask in zip(doc["annotations"], masks):
        assert isinstance(ann["segmentation"]["counts"], str)
        np.testing.assert_array_equal(api.annToMask(ann).astype(bool), mask)
    unlabelled = coco.annotations(masks)  # no labels: category 1, "object", as before
    assert [a["category_id"] for a in unlabelled] == [1, 1]
    assert coco.document([], unlabelled, "t")["categories"] == [coco.OBJECT_CATEGORY]


def test_an_empty_mask_has_no_polygon_and_bad_options_are_named():
    empty = coco.mask_fields(np.zeros((5, 5), bool), segmentation="polygons")
    assert empty == {"segmentation": [], "area": 0, "bbox": [0, 0, 0, 0]}
    with pytest.raises(ValueError, match="segmentation must be one of"):
        coco.mask_fields(np.ones((2, 2), bool), segmentation="polygon")
    with pytest.raises(ValueError, match="segmentation must be one of"):
        coco.document([], [], "t", segmentation="mask")
    with pytest.raises(ValueError, match="2 masks but 1 labels"):
        coco.annotations(two_objects(), labels=["a"])


def test_polygon_annotations_of_coco_objects_match_their_masks(tmp_path, shared_data):
    """Real COCO val objects with their category names as labels: the written document's
    polygons decode (COCO.annToMask) to the object, and the categories keep first-seen order."""
    data = coco_val_images(shared_data, 6)
    all_labels = [name for _, _, names in data for name in names]
    sources = [mask for _, masks, _ in data for mask in masks]
    cats = coco.categories_from_labels(all_labels)
    images, anns = [], []
    for image_id, (hw, masks, names) in enumerate(data, start=1):
        images.append({"id": image_id, "width": hw[1], "height": hw[0], "file_name": f"{image_id}.jpg"})
        anns += coco.annotations(masks, image_id=image_id, labels=names, categories=cats,
                                 segmentation="polygons", start_id=len(anns) + 1)
    doc, api = write_and_load(tmp_path, coco.document(images, anns, "t", categories=cats, segmentation="polygons"))
    assert [c["name"] for c in doc["categories"]] == list(dict.fromkeys(all_labels))
    ious = [iou(api.annToMask(ann).astype(bool), src) for ann, src in zip(doc["annotations"], sources)]
    names = {c["id"]: c["name"] for c in doc["categories"]}
    assert [names[a["category_id"]] for a in doc["annotations"]] == all_labels
    assert len(ious) > 40 and np.mean(ious) > 0.999 and min(ious) > 0.95
