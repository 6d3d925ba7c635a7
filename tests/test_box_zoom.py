"""Box zoom (ImagePredictor box_zoom, on for segapp_small): a box prompt is answered from a crop
around the box, embedded on its own, and the result is pasted back into the image."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import segapp
from segapp.image_predictor import LOW_RES_LOGIT_CLAMP, ZOOM_BATCH, ZOOM_MIN_SIDE


@pytest.fixture(scope="module")
def model():
    return segapp.build_model("test_tiny", device="cpu")


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
    img[100:140, 150:200] = (250, 40, 40)
    return img


def zoomed(model, image, zoom=3.0):
    pred = segapp.ImagePredictor(model, box_zoom=zoom)
    pred.set_image(image)
    return pred


def test_window_is_a_square_of_box_sides_cut_at_the_border(model, image):
    pred = zoomed(model, image)
    assert pred.zoom_window([150, 100, 200, 140]) == (100, 45, 250, 195)  # 3 x 50 around (175, 120)
    x0, y0, x1, y1 = pred.zoom_window([0, 0, 60, 40])  # at the corner: cut, box kept
    assert (x0, y0) == (0, 0) and (x1, y1) == (120, 110)
    x0, y0, x1, y1 = pred.zoom_window([160, 120, 162, 121])  # a tiny box: ZOOM_MIN_SIDE
    assert ZOOM_MIN_SIDE <= x1 - x0 <= ZOOM_MIN_SIDE + 1 and ZOOM_MIN_SIDE <= y1 - y0 <= ZOOM_MIN_SIDE + 1
    assert pred.zoom_window([0, 0, 320, 240]) == (0, 0, 320, 240)


def test_box_is_answered_from_its_crop(model, image):
    """The zoomed result is what the plain predictor gives on the crop, pasted into the image."""
    box = np.array([150, 100, 200, 140], dtype=np.float32)
    masks, ious, low = zoomed(model, image).predict(box=box, multimask_output=True, return_logits=True)
    x0, y0, x1, y1 = 100, 45, 250, 195
    plain = segapp.ImagePredictor(model, box_zoom=0)
    plain.set_image(np.ascontiguousarray(image[y0:y1, x0:x1]))
    crop_masks, crop_ious, _ = plain.predict(box=box - [x0, y0, x0, y0], multimask_output=True,
                                             return_logits=True)
    assert masks.shape == (3, 240, 320) and low.shape == (3, *model.prompt_encoder.mask_input_size)
    np.testing.assert_allclose(ious, crop_ious, atol=1e-5)
    np.testing.assert_allclose(masks[:, y0:y1, x0:x1], crop_masks, atol=1e-4)
    assert (masks[:, :y0] == -LOW_RES_LOGIT_CLAMP).all() and (masks[:, :, x1:] == -LOW_RES_LOGIT_CLAMP).all()
    assert np.abs(low).max() <= LOW_RES_LOGIT_CLAMP


def test_binary_masks_batches_and_feeding_back(model, image):
    pred = zoomed(model, image)
    boxes = np.array([[150, 100, 200, 140], [10, 10, 40, 60]], dtype=np.float32)
    masks, ious, low = pred.predict(box=boxes, multimask_output=False)
    assert masks.shape == (2, 1, 240, 320) and ious.shape == (2, 1) and set(np.unique(masks)) <= {0.0, 1.0}
    for i, box in enumerate(boxes):
        one, one_iou, _ = pred.predict(box=box, multimask_output=False)
        np.testing.assert_array_equal(one, masks[i])
        np.testing.assert_allclose(one_iou, ious[i], atol=1e-6)
    # The low-res logits are of the whole image: they go back in as mask input with clicks.
    refined, _, _ = pred.predict(point_coords=np.array([[170, 120]]), point_labels=np.array([1]),
                                 box=boxes[0], mask_input=low[0], multimask_output=False)
    assert refined.shape == (1, 240, 320)


def test_prompts_with_points_or_masks_and_whole_image_boxes_are_not_zoomed(model, image):
    on, off = zoomed(model, image), zoomed(model, image, zoom=0.0)
    box = np.array([150, 100, 200, 140], dtype=np.float32)
    click = dict(point_coords=np.array([[170, 120]]), point_labels=np.array([1]))
    np.testing.assert_array_equal(on.predict(box=box, **click)[0], off.predict(box=box, **click)[0])
    whole = np.array([0, 0, 320, 240], dtype=np.float32)  # the crop would be the image
    np.testing.assert_array_equal(on.predict(box=whole)[0], off.predict(box=whole)[0])
    assert not np.array_equal(on.predict(box=box, return_logits=True)[0],
                              off.predict(box=box, return_logits=True)[0])


def test_default_comes_from_the_model(model):
    assert segapp.ImagePredictor(model).box_zoom == 0.0  # official configs: whole image, as SAM 2
    small = segapp.build_model("segapp_small")
    assert segapp.model_info(small).box_zoom == 3.0 and segapp.ImagePredictor(small).box_zoom == 3.0
    with pytest.raises(ValueError, match="box_zoom"):
        segapp.ImagePredictor(model, box_zoom=-1)


def test_zoom_under_bf16_autocast_returns_float32(image):
    model = segapp.build_model("test_tiny", device="cpu", bf16=True)
    masks, ious, low = zoomed(model, image).predict(box=np.array([150, 100, 200, 140]), return_logits=True)
    assert masks.dtype == ious.dtype == low.dtype == np.float32
    assert torch.isfinite(torch.from_numpy(masks)).all()


def test_zoom_can_be_turned_on_after_set_image(model, image):
    late = segapp.ImagePredictor(model, box_zoom=0)
    late.set_image(image)
    late.box_zoom = 3.0
    box = np.array([150, 100, 200, 140], dtype=np.float32)
    np.testing.assert_array_equal(late.predict(box=box)[0], zoomed(model, image).predict(box=box)[0])


def test_many_boxes_go_in_batches_and_keep_their_order(model, image):
    """Crops are embedded and decoded `zoom_batch` at a time; boxes whose crop is the whole image
    use the image's embedding. Whatever the grouping, box i's result is that of box i alone."""
    pred = segapp.ImagePredictor(model, box_zoom=3.0, zoom_batch=2)
    pred.set_image(image)
    boxes = np.array([[150, 100, 200, 140], [0, 0, 320, 240], [10, 10, 40, 60], [200, 150, 300, 230],
                      [5, 100, 60, 200]], dtype=np.float32)
    masks, ious, low = pred.predict(box=boxes, multimask_output=True, return_logits=True)
    assert masks.shape == (5, 3, 240, 320) and ious.shape == (5, 3) and low.shape[:2] == (5, 3)
    for i, box in enumerate(boxes):
        one, one_iou, one_low = pred.predict(box=box, multimask_output=True, return_logits=True)
        np.testing.assert_allclose(one, masks[i], atol=1e-4)
        np.testing.assert_allclose(one_iou, ious[i], atol=1e-5)
        np.testing.assert_allclose(one_low, low[i], atol=1e-4)


def test_zoom_batch_fast_path_equals_one_crop_at_a_time(model, image):
    """zoom_batch (default ZOOM_BATCH crops per encoder and decoder call) against the plain
    path, zoom_batch=1: the same masks, scores and low-res logits."""
    boxes = np.array([[150, 100, 200, 140], [10, 10, 40, 60], [200, 150, 300, 230], [5, 100, 60, 200],
                      [0, 0, 320, 240]], dtype=np.float32)
    results = []
    for zoom_batch in (ZOOM_BATCH, 1):
        pred = segapp.ImagePredictor(model, box_zoom=3.0, zoom_batch=zoom_batch)
        pred.set_image(image)
        results.append(pred.predict(box=boxes, multimask_output=True, return_logits=True))
    for fast, plain in zip(*results):
        torch.testing.assert_close(torch.from_numpy(fast), torch.from_numpy(plain), rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="zoom_batch must be >= 1"):
        segapp.ImagePredictor(model, zoom_batch=0)
