"""COCO training samples: decoding, augmentation keeping masks on their pixels, skips."""
from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from segapp.training.data import AugmentConfig, CocoInstanceDataset, collate
from segapp.transforms import PIXEL_MEAN, PIXEL_STD, ImageTransforms

RED, BLUE, GRAY = (220, 30, 30), (30, 30, 220), (128, 128, 128)


def _square(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def make_coco(root: Path, extra_bad: bool = False) -> tuple[Path, Path]:
    """Two 160x120 PNG images: a red square on gray, a blue rectangle on gray (where the two
    images overlap, the rectangle covers part of the square); instances.json."""
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    shapes = {1: ("a.png", RED, (40, 30, 80, 70)), 2: ("b.png", BLUE, (60, 20, 120, 60))}
    data = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "thing"}]}
    for image_id, (name, colour, (x0, y0, x1, y1)) in shapes.items():
        img = np.full((120, 160, 3), GRAY, dtype=np.uint8)
        img[y0:y1, x0:x1] = colour
        cv2.imwrite(str(images / name), img[:, :, ::-1])
        data["images"].append({"id": image_id, "file_name": name, "height": 120, "width": 160})
        data["annotations"].append({"id": image_id * 10, "image_id": image_id, "category_id": 1,
                                    "segmentation": _square(x0, y0, x1, y1), "area": float((x1 - x0) * (y1 - y0)),
                                    "bbox": [x0, y0, x1 - x0, y1 - y0], "iscrowd": 0})
    if extra_bad:
        data["images"].append({"id": 3, "file_name": "missing.png", "height": 120, "width": 160})
        data["annotations"] += [
            {"id": 31, "image_id": 3, "category_id": 1, "segmentation": _square(0, 0, 9, 9), "area": 81.0,
             "bbox": [0, 0, 9, 9], "iscrowd": 0},
            {"id": 11, "image_id": 1, "category_id": 1, "segmentation": [[1, 1, 2, 2]], "area": 0.0,
             "bbox": [1, 1, 1, 1], "iscrowd": 0},  # a degenerate polygon: empty mask
            {"id": 41, "image_id": 99, "category_id": 1, "segmentation": _square(0, 0, 9, 9), "area": 81.0,
             "bbox": [0, 0, 9, 9], "iscrowd": 0},  # unknown image
        ]
    path = root / "instances.json"
    path.write_text(json.dumps(data))
    return path, images


def _rgb(image: torch.Tensor) -> torch.Tensor:
    """Normalised [3, S, S] -> [S, S, 3] in [0, 255]."""
    mean, std = torch.tensor(PIXEL_MEAN).view(3, 1, 1), torch.tensor(PIXEL_STD).view(3, 1, 1)
    return ((image * std + mean) * 255).permute(1, 2, 0)


def _interior(mask: torch.Tensor) -> torch.Tensor:
    """The mask eroded by one pixel (away from the resized, blended edge)."""
    m = mask.numpy().astype(np.uint8)
    return torch.from_numpy(cv2.erode(m, np.ones((3, 3), np.uint8)).astype(bool))


def _is(colour, pixels: torch.Tensor) -> torch.Tensor:
    return (pixels - torch.tensor(colour, dtype=torch.float32)).abs().amax(-1) < 12


def test_without_augmentation_the_sample_is_the_predictors_input(tmp_path):
    ann, images = make_coco(tmp_path)
    ds = CocoInstanceDataset(ann, images, 64, augment=AugmentConfig.none())
    sample = ds[0]
    rgb = cv2.imread(str(images / "a.png"))[:, :, ::-1]
    expected = ImageTransforms(64).to_input([rgb], torch.device("cpu"))[0]
    torch.testing.assert_close(sample.image, expected, rtol=0, atol=1e-6)
    assert sample.masks.shape == (1, 64, 64) and sample.image_id == 1
    # the square covers pixels x 40..79 of 160 and y 30..69 of 120; at 64 px: x 16..31 and
    # y 16..36 (row 37 is only a third covered)
    ys, xs = torch.nonzero(sample.masks[0], as_tuple=True)
    assert (xs.min().item(), xs.max().item()) == (16, 31)
    assert (ys.min().item(), ys.max().item()) == (16, 36)


@pytest.mark.parametrize("epoch", range(4))
def test_scale_crop_flip_keep_the_mask_on_the_square(tmp_path, epoch):
    ann, images = make_coco(tmp_path)
    aug = AugmentConfig(crop_prob=1.0, scale_range=(0.6, 2.0), hflip_prob=0.5, colour_prob=0.0,
                        copy_paste_prob=0.0)
    ds = CocoInstanceDataset(ann, images, 64, augment=aug, seed=epoch)
    ds.set_epoch(epoch)
    for index, colour in ((0, RED), (1, BLUE)):
        sample = ds.sample(index)
        rgb = _rgb(sample.image)
        mask = sample.masks[0]
        assert mask.sum() >= ds.min_mask_pixels
        assert _is(colour, rgb[_interior(mask)]).all()
        assert not _is(colour, rgb[_interior(~mask)]).any()


def test_copy_paste_puts_the_other_images_instance_on_top(tmp_path):
    ann, images = make_coco(tmp_path)
    aug = AugmentConfig(crop_prob=0.0, hflip_prob=0.0, colour_prob=0.0, copy_paste_prob=1.0)
    ds = CocoInstanceDataset(ann, images, 64, augment=aug)
    sample = ds.sample(0)
    rgb = _rgb(sample.image)
    assert len(sample.masks) == 2  # its red square and the pasted blue rectangle
    red, blue = sample.masks
    assert _is(BLUE, rgb[_interior(blue)]).all()
    assert _is(RED, rgb[_interior(red)]).all()
    assert not (red & blue).any()  # the pasted rectangle covers part of the square
    assert red.sum() < CocoInstanceDataset(ann, images, 64, augment=AugmentConfig.none()).sample(0).masks.sum()


@pytest.mark.parametrize("epoch", range(3))
def test_scaled_copy_paste_masks_follow_the_pasted_pixels(tmp_path, epoch):
    """With scale jitter: the pasted rectangle's mask is where its blue pixels are, at its new
    size; the square it covers loses those pixels; nothing under min_mask_pixels is kept."""
    ann, images = make_coco(tmp_path)
    aug = replace(AugmentConfig.preset("none+copy-paste"), copy_paste_prob=1.0, copy_paste_scale=(0.6, 1.6))
    ds = CocoInstanceDataset(ann, images, 64, augment=aug, seed=epoch)
    plain = CocoInstanceDataset(ann, images, 64, augment=AugmentConfig.none())
    original_red, original_blue = plain.sample(0).masks[0], plain.sample(1).masks[0]
    sample = ds.sample(0, epoch)
    rgb = _rgb(sample.image)
    assert (sample.masks.flatten(1).sum(1) >= ds.min_mask_pixels).all()
    *rest, blue = sample.masks
    assert _is(BLUE, rgb[_interior(blue)]).all() and not _is(BLUE, rgb[_interior(~blue)]).any()
    assert blue.sum() != original_blue.sum()  # scaled
    if rest:
        red = rest[0]
        assert _is(RED, rgb[_interior(red)]).all()
        assert not (red & blue).any()
        assert red.sum() <= original_red.sum()
        assert red.sum() == (original_red & ~blue).sum()  # exactly the covered pixels are gone
    else:  # the square was covered (almost) entirely: its leftover is dropped
        assert (original_red & ~blue).sum() < ds.min_mask_pixels


def test_copy_paste_presets_compose():
    light = AugmentConfig.light()
    assert light.copy_paste_prob == 0.0
    for name, base in (("copy-paste", light), ("light+copy-paste", light), ("object+copy-paste", AugmentConfig.object()),
                       ("strong+copy-paste", AugmentConfig())):
        aug = AugmentConfig.preset(name)
        assert aug.copy_paste_prob == 0.5 and aug.copy_paste_scale == (0.5, 1.5)
        assert replace(aug, copy_paste_prob=base.copy_paste_prob, copy_paste_scale=base.copy_paste_scale) == base
    with pytest.raises(ValueError, match="copy-paste"):
        AugmentConfig.preset("light+mixup")


def test_colour_jitter_changes_colours_not_masks(tmp_path):
    ann, images = make_coco(tmp_path)
    aug = AugmentConfig(crop_prob=0.0, hflip_prob=0.0, colour_prob=1.0, copy_paste_prob=0.0)
    plain = CocoInstanceDataset(ann, images, 64, augment=AugmentConfig.none()).sample(0)
    jittered = CocoInstanceDataset(ann, images, 64, augment=aug).sample(0)
    assert torch.equal(plain.masks, jittered.masks)
    assert not torch.allclose(plain.image, jittered.image)


def test_samples_are_deterministic_per_seed_and_epoch(tmp_path):
    ann, images = make_coco(tmp_path)
    ds = CocoInstanceDataset(ann, images, 64, seed=5)
    a, b = ds.sample(0, epoch=3), ds.sample(0, epoch=3)
    assert torch.equal(a.image, b.image) and torch.equal(a.masks, b.masks)
    others = [ds.sample(0, epoch=e) for e in range(4, 8)]
    assert any(o.image.shape != a.image.shape or not torch.equal(o.image, a.image) for o in others)


def test_bad_annotations_and_images_are_skipped_and_counted(tmp_path, caplog):
    ann, images = make_coco(tmp_path, extra_bad=True)
    with caplog.at_level(logging.WARNING, logger="segapp.training.data"):
        ds = CocoInstanceDataset(ann, images, 64, augment=AugmentConfig.none())
        assert len(ds) == 2  # the image whose file is missing is left out
        samples = [ds[i] for i in range(len(ds))]
    assert ds.skip_counts["missing_image_file"] == 1
    assert ds.skip_counts["unknown_image_id"] == 1
    assert ds.skip_counts["empty_mask"] == 1
    assert all(len(s.masks) == 1 for s in samples)
    assert "empty_mask" in caplog.text and "missing_image_file" in caplog.text


def test_no_usable_image_is_an_error(tmp_path):
    ann, images = make_coco(tmp_path)
    for p in images.iterdir():
        p.unlink()
    with pytest.raises(ValueError, match="no usable image"):
        CocoInstanceDataset(ann, images, 64)


def test_real_coco_images_decode_and_collate(shared_data):
    root = shared_data / "coco_tiny"
    ds = CocoInstanceDataset(root / "annotations" / "instances_val2017.json", root / "val2017", 128,
                             instances_per_image=3, max_images=2)
    batch = collate([ds[0], ds[1]])
    assert batch.images.shape == (2, 3, 128, 128)
    assert batch.masks.dtype == torch.bool and batch.masks.shape[1:] == (128, 128)
    assert 2 <= len(batch.masks) <= 6 and batch.image_index.tolist() == sorted(batch.image_index.tolist())
    assert (batch.masks.flatten(1).sum(1) >= ds.min_mask_pixels).all()


def test_several_sources_train_as_one_dataset(tmp_path):
    a = make_coco(tmp_path / "a")
    b = make_coco(tmp_path / "b", extra_bad=True)
    ds = CocoInstanceDataset([a[0], b[0]], [a[1], b[1]], 64, augment=AugmentConfig.none())
    assert len(ds) == 4
    assert ds.skip_counts["missing_image_file"] == 1
    assert [s.image_id for s in (ds[i] for i in range(4))] == [1, 2, 1, 2]
    with pytest.raises(ValueError, match="2 annotation files for 1 image folders"):
        CocoInstanceDataset([a[0], b[0]], [a[1]], 64)


@pytest.mark.parametrize("seed", range(4))
def test_object_crop_centres_one_whole_instance(tmp_path, seed):
    """--augment object: a window a few box sides wide around one instance, that instance
    whole in it (as box zoom shows it to the model), masks still on their pixels."""
    from segapp.training.data import object_window

    ann, images = make_coco(tmp_path)
    aug = AugmentConfig(object_crop_prob=1.0, object_context=(2.0, 3.0), hflip_prob=0.0, colour_prob=0.0,
                        copy_paste_prob=0.0)
    masks = torch.zeros((1, 120, 160), dtype=torch.bool)
    masks[0, 30:70, 40:80] = True  # a 40 x 40 box
    i, (x0, y0, w, h) = object_window(masks, aug, np.random.default_rng(seed))
    assert i == 0
    assert x0 <= 40 and y0 <= 30 and x0 + w >= 80 and y0 + h >= 70  # the instance stays whole
    assert 0 <= x0 and 0 <= y0 and x0 + w <= 160 and y0 + h <= 120  # cut at the border
    assert max(w, h) >= min(80, 120)  # at least 2 box sides where the image allows
    ds = CocoInstanceDataset(ann, images, 64, augment=aug, seed=seed)
    sample = ds.sample(0)
    mask = sample.masks[0]
    assert len(sample.masks) == 1 and mask.sum() >= ds.min_mask_pixels
    ys, xs = torch.nonzero(mask, as_tuple=True)
    assert xs.min() > 0 and ys.min() > 0 and xs.max() < 63 and ys.max() < 63  # not cut
    assert mask.sum() > 64 * 64 / 16  # zoomed in: 40 px of 160 would be 16 px of 64 wide
    rgb = _rgb(sample.image)
    assert _is(RED, rgb[_interior(mask)]).all()
    assert not _is(RED, rgb[_interior(~mask)]).any()


def test_object_preset_is_light_with_object_crops():
    obj, light = AugmentConfig.preset("object"), AugmentConfig.preset("light")
    assert obj.object_crop_prob == 0.75 and light.object_crop_prob == 0.0
    assert (obj.scale_range, obj.brightness, obj.copy_paste_prob) == (light.scale_range, light.brightness, 0.0)
