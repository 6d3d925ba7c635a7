"""ImagePredictor behaviour users rely on: input forms, shapes, errors."""
from __future__ import annotations

import numpy as np
import torch
import pytest
from PIL import Image

import segapp
from segapp.transforms import to_rgb_uint8


@pytest.fixture(scope="module")
def predictor():
    return segapp.ImagePredictor(segapp.build_model("test_tiny", device="cpu"))


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)


def test_predict_shapes_and_types(predictor, image):
    predictor.set_image(image)
    side = predictor.model.image_size // 4
    masks, ious, low = predictor.predict(point_coords=np.array([[60, 45]]), point_labels=np.array([1]))
    assert masks.shape == (3, 90, 120) and masks.dtype == np.float32
    assert set(np.unique(masks)) <= {0.0, 1.0}
    assert ious.shape == (3,) and ious.dtype == np.float32
    assert low.shape == (3, side, side) and np.abs(low).max() <= 32.0
    masks, ious, low = predictor.predict(box=np.array([10, 10, 80, 70]), multimask_output=False, return_logits=True)
    assert masks.shape == (1, 90, 120) and masks.dtype == np.float32
    # Normalised coordinates give the same result as pixel coordinates.
    a = predictor.predict(point_coords=np.array([[60, 45]]), point_labels=np.array([1]))[2]
    b = predictor.predict(point_coords=np.array([[0.5, 0.5]]), point_labels=np.array([1]), normalize_coords=False)[2]
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert predictor.get_image_embedding().shape[1:] == (32, side // 4, side // 4)


def test_errors_name_the_problem(predictor, image):
    predictor.reset_predictor()
    with pytest.raises(RuntimeError, match="set_image"):
        predictor.predict(point_coords=np.array([[1, 1]]), point_labels=np.array([1]))
    with pytest.raises(RuntimeError, match="set_image"):
        predictor.get_image_embedding()
    predictor.set_image(image)
    cases = [
        (dict(point_coords=np.array([[1, 2, 3]]), point_labels=np.array([1])), "shape"),
        (dict(point_coords=np.array([[1, 2]])), "point_labels"),
        (dict(point_coords=np.array([[1, 2], [3, 4]]), point_labels=np.array([1])), "one label per point"),
        (dict(point_coords=np.array([[np.nan, 2]]), point_labels=np.array([1])), "NaN"),
        (dict(point_coords=np.array([[np.inf, 2]]), point_labels=np.array([1])), "infinite"),
        (dict(point_coords=np.array([[500, 2]]), point_labels=np.array([1])), "outside the image"),
        (dict(point_coords=np.array([[5, 2]]), point_labels=np.array([7])), "point_labels"),
        # 2 and 3 are the model's box-corner labels: user boxes go through `box` (segapp.prompts).
        (dict(point_coords=np.array([[5, 2]]), point_labels=np.array([2])), "pass the box as `box`"),
        (dict(box=np.array([50, 10, 20, 40])), "x1 < x0"),
        (dict(box=np.array([1, 2, 3])), "box must have shape"),
        (dict(mask_input=np.zeros((1, 64, 64))), "mask_input must have shape"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            predictor.predict(**kwargs)
    with pytest.raises(RuntimeError, match="set_image_batch"):
        predictor.predict_batch(box_batch=[np.array([0, 0, 5, 5])])


def test_image_forms_are_converted():
    rgb = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    assert np.array_equal(to_rgb_uint8(rgb), rgb)
    gray = rgb[..., 0]
    assert np.array_equal(to_rgb_uint8(gray), np.repeat(gray[..., None], 3, axis=2))
    assert np.array_equal(to_rgb_uint8(gray[..., None]), np.repeat(gray[..., None], 3, axis=2))
    rgba = np.dstack([rgb, np.full((20, 30), 128, np.uint8)])
    assert np.array_equal(to_rgb_uint8(rgba), rgb)
    wide = rgb.astype(np.uint16) * 257
    assert np.array_equal(to_rgb_uint8(wide), rgb)
    assert np.array_equal(to_rgb_uint8(rgb / 255.0), rgb)
    assert np.array_equal(to_rgb_uint8(Image.fromarray(rgb)), rgb)
    assert np.array_equal(to_rgb_uint8(Image.fromarray(gray)), np.repeat(gray[..., None], 3, axis=2))
    sixteen = Image.fromarray(wide[..., 0])
    assert to_rgb_uint8(sixteen).shape == (20, 30, 3)
    np.testing.assert_allclose(to_rgb_uint8(sixteen)[..., 0], rgb[..., 0], atol=1)
    for bad, message in [(np.zeros((0, 5, 3), np.uint8), "empty"), (np.zeros((4, 4, 2), np.uint8), "shape"),
                         (np.full((4, 4, 3), 2.0), r"\[0, 1\]"), ("image.png", "unsupported image type")]:
        with pytest.raises((ValueError, TypeError), match=message):
            to_rgb_uint8(bad)


def test_exif_rotation_is_applied(tmp_path):
    rgb = np.zeros((20, 40, 3), np.uint8)
    rgb[:, :20] = 255  # left half white
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    Image.fromarray(rgb).save(path, exif=exif, quality=100)
    shown = to_rgb_uint8(Image.open(path))
    assert shown.shape == (40, 20, 3)
    assert shown[:20].mean() > 200 and shown[20:].mean() < 50  # white half is now on top


def test_gray_and_pil_inputs_predict(predictor):
    gray = np.random.default_rng(2).integers(0, 256, (64, 48), dtype=np.uint8)
    predictor.set_image(gray)
    a = predictor.predict(point_coords=np.array([[20, 30]]), point_labels=np.array([1]))[2]
    predictor.set_image(Image.fromarray(gray))
    b = predictor.predict(point_coords=np.array([[20, 30]]), point_labels=np.array([1]))[2]
    np.testing.assert_array_equal(a, b)


def test_bf16_switch_close_to_fp32(image):
    fp32 = segapp.ImagePredictor(segapp.build_model("test_tiny", device="cpu"))
    bf16 = segapp.ImagePredictor(segapp.build_model("test_tiny", device="cpu", bf16=True))
    bf16.model.load_state_dict(fp32.model.state_dict())
    for p in (fp32, bf16):
        p.set_image(image)
    a = fp32.predict(box=np.array([10, 10, 80, 70]), multimask_output=False)
    b = bf16.predict(box=np.array([10, 10, 80, 70]), multimask_output=False)
    assert b[2].dtype == np.float32
    np.testing.assert_allclose(a[2], b[2], atol=0.1 * np.abs(a[2]).max())


def test_hole_and_sprinkle_removal():
    import torch

    from segapp.postprocess import fill_holes_and_sprinkles

    logits = torch.full((1, 1, 32, 32), -5.0)
    logits[..., 4:20, 4:20] = 5.0
    logits[..., 10:12, 10:12] = -5.0  # a 4-pixel hole
    logits[..., 28, 28] = 5.0  # a 1-pixel island
    out = fill_holes_and_sprinkles(logits, 0.0, max_hole_area=4, max_sprinkle_area=1)
    assert (out[..., 10:12, 10:12] > 0).all() and out[..., 28, 28] < 0
    assert (out[..., 4:20, 4:20] > 0).all() and (out > 0).sum() == 16 * 16


def test_iou_floor_skips_only_masks_that_would_be_dropped(predictor, image):
    import torch

    from segapp.modeling.mask_decoder import SKIPPED_MASK_LOGIT

    predictor.set_image(image)
    pts = torch.rand(12, 1, 2) * predictor.model.image_size
    labels = torch.ones(12, 1, dtype=torch.int)
    full, iou = predictor.decode_low_res(pts, labels, multimask_output=True)
    floor = float(iou.max(dim=1).values.median())  # about half the prompts pass
    part, iou_part = predictor.decode_low_res(pts, labels, multimask_output=True, iou_floor=floor)
    torch.testing.assert_close(iou_part, iou)
    kept = (iou > floor).any(dim=1)
    assert 0 < kept.sum() < 12
    torch.testing.assert_close(part[kept], full[kept], rtol=1e-5, atol=1e-5)
    assert (part[~kept] == SKIPPED_MASK_LOGIT).all()


def test_model_built_under_inference_mode(image):
    """A model whose parameters were made inside torch.inference_mode (a common way to load
    for inference) predicts, and its cached dense position encoding follows a reloaded
    frequency matrix."""
    with torch.inference_mode():
        model = segapp.build_model("test_tiny", device="cpu")
        pred = segapp.ImagePredictor(model)
        pred.set_image(image)
        first = pred.predict(point_coords=np.array([[20, 30]]), point_labels=np.array([1]))[0]
        pe = model.prompt_encoder
        before = pe.get_dense_pe().clone()
        pe.pe_layer.positional_encoding_gaussian_matrix.mul_(2.0)
        assert not torch.equal(pe.get_dense_pe(), before)
    assert first.shape[1:] == image.shape[:2]


def test_embedding_and_transforms_are_public(image):
    """What other modules read from a predictor (segment everything's prompt geometry, the
    demo's memory accounting) is public: the embedding, None until an image is set, and the
    transforms that put image pixels into model-input pixels."""
    predictor = segapp.ImagePredictor(segapp.build_model("test_tiny", device="cpu"))
    assert predictor.embedding is None
    predictor.set_image(image)
    side = predictor.model.image_size // 16
    assert predictor.embedding.image_embed.shape == (1, 32, side, side)
    assert predictor.embedding.image_embed is predictor.get_image_embedding()
    assert len(predictor.embedding.high_res_feats) == 2
    size = predictor.model.image_size
    xy = predictor.transforms.coords_to_input(torch.tensor([[120.0, 90.0]]), (90, 120))
    torch.testing.assert_close(xy, torch.tensor([[float(size), float(size)]]))
    predictor.reset_predictor()
    assert predictor.embedding is None
