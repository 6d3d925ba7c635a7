"""ImagePredictor's public tensor core: prompts_to_input then predict_torch gives what predict gives
(the NumPy layer is a thin layer over it, as in SAM v1), with and without box zoom, on any image of
a batch; its arguments are keyword-only."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import segapp
from segapp.image_predictor import ModelPrompts
from tiny_models import tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (90, 120, 3), dtype=np.uint8), rng.integers(0, 256, (70, 50, 3), dtype=np.uint8)]


def as_numpy(outputs):
    """predict's form of predict_torch's outputs: float32 arrays, a single prompt's axis dropped."""
    return [(t.squeeze(0) if t.shape[0] == 1 else t).float().cpu().numpy() for t in outputs]


PROMPTS = {
    "one click": dict(point_coords=np.array([[60, 45]]), point_labels=np.array([1])),
    "clicks": dict(point_coords=np.array([[60, 45], [10, 80]]), point_labels=np.array([1, 0])),
    "box": dict(box=np.array([10, 10, 80, 70])),
    "boxes and a click each": dict(box=np.array([[10, 10, 80, 70], [0, 0, 30, 30]]),
                                   point_coords=np.array([[[40, 40]], [[10, 10]]]), point_labels=np.array([[1], [1]])),
    "padded clicks": dict(point_coords=np.array([[[60, 45], [0, 0]], [[5, 5], [50, 60]]]),
                          point_labels=np.array([[1, -1], [1, 0]])),
}


@pytest.mark.parametrize("name", list(PROMPTS))
@pytest.mark.parametrize("multimask, logits", [(True, False), (False, True)])
def test_predict_torch_equals_predict(model, images, name, multimask, logits):
    predictor = segapp.ImagePredictor(model)
    predictor.set_image(images[0])
    expected = predictor.predict(**PROMPTS[name], multimask_output=multimask, return_logits=logits)
    prompts = predictor.prompts_to_input(**PROMPTS[name])
    assert isinstance(prompts, ModelPrompts)
    masks, ious, low = predictor.predict_torch(**prompts._asdict(), multimask_output=multimask, return_logits=logits)
    assert masks.dtype == (torch.float32 if logits else torch.bool)
    assert masks.ndim == 4 and masks.shape[-2:] == (90, 120) and ious.shape == masks.shape[:2]
    for got, want in zip(as_numpy((masks, ious, low)), expected):
        np.testing.assert_array_equal(got, want)


def test_mask_input_fed_back_through_either_layer(model, images):
    predictor = segapp.ImagePredictor(model)
    predictor.set_image(images[0])
    click = PROMPTS["one click"]
    _, _, low = predictor.predict(**click, multimask_output=False)
    expected = predictor.predict(**click, mask_input=low, multimask_output=False)
    prompts = predictor.prompts_to_input(**click, mask_input=low)
    assert prompts.mask_input.shape == (1, 1, *low.shape[-2:])
    got = as_numpy(predictor.predict_torch(**prompts._asdict(), multimask_output=False))
    for g, w in zip(got, expected):
        np.testing.assert_array_equal(g, w)


def test_box_zoom_goes_through_predict_torch(model, images):
    predictor = segapp.ImagePredictor(model, box_zoom=3.0)
    predictor.set_image(images[0])
    boxes = np.array([[10, 10, 30, 30], [60, 40, 70, 55]])
    expected = predictor.predict(box=boxes)
    got = as_numpy(predictor.predict_torch(boxes=predictor.prompts_to_input(box=boxes).boxes))
    for g, w in zip(got, expected):
        np.testing.assert_array_equal(g, w)
    plain = segapp.ImagePredictor(model, box_zoom=0)
    plain.set_image(images[0])
    assert not np.array_equal(plain.predict(box=boxes)[0], expected[0])  # the zoom did answer


def test_any_image_of_a_batch(model, images):
    predictor = segapp.ImagePredictor(model)
    predictor.set_image_batch(images)
    boxes = [np.array([5, 5, 60, 60]), np.array([[0, 0, 40, 60], [10, 10, 20, 20]])]
    expected = predictor.predict_batch(box_batch=boxes, multimask_output=False)
    for i, box in enumerate(boxes):
        prompts = predictor.prompts_to_input(box=box, img_idx=i)
        got = as_numpy(predictor.predict_torch(**prompts._asdict(), multimask_output=False, img_idx=i))
        assert got[0].shape[-2:] == images[i].shape[:2]
        for g, want in zip(got, (e[i] for e in expected)):
            np.testing.assert_array_equal(g, want)
    with pytest.raises(IndexError, match="img_idx 2 is out of range: 2 image"):
        predictor.prompts_to_input(box=boxes[0], img_idx=2)
    with pytest.raises(IndexError, match="img_idx 2 is out of range"):
        predictor.predict_torch(img_idx=2)


def test_keyword_only_and_checked(model, images):
    predictor = segapp.ImagePredictor(model)
    with pytest.raises(RuntimeError, match="set_image"):
        predictor.prompts_to_input(box=np.array([0, 0, 5, 5]))
    predictor.set_image(images[0])
    prompts = predictor.prompts_to_input(box=np.array([0, 0, 5, 5]))
    with pytest.raises(TypeError):
        predictor.predict_torch(*prompts)  # noqa: the booleans and tensors are named, never positional
    with pytest.raises(TypeError):
        predictor.prompts_to_input(np.array([[1, 1]]), np.array([1]))
    with pytest.raises(ValueError, match="point_coords"):  # the NumPy layer's checks: outside the image
        predictor.prompts_to_input(point_coords=np.array([[500, 10]]), point_labels=np.array([1]))
