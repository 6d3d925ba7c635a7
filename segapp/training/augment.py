"""Augmentation of training images and their instance masks: the presets (`AugmentConfig`)
and the pure steps `CocoInstanceDataset` composes (and `video_data` reuses for clips).

Geometry is that of `segapp.transforms.ImageTransforms`: the (cropped) image is stretched to
image_size x image_size with antialiased bilinear resizing; masks go through the very same
resize as float images and are thresholded at 0.5, so they stay on their pixels. Every random
choice is drawn from the NumPy generator passed in, so a sample is the same whenever it is
drawn again.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from segapp.transforms import PIXEL_MEAN, PIXEL_STD, box_window

# Masks resized as float images are kept where at least half a pixel is covered.
MASK_RESIZE_THRESHOLD = 0.5
# The copy-paste option of --augment: its name, share of samples and scale jitter.
COPY_PASTE = "copy-paste"
COPY_PASTE_PROB = 0.5
COPY_PASTE_SCALE = (0.5, 1.5)


@dataclass(frozen=True)
class AugmentConfig:
    """Strengths of the augmentations. The defaults ("strong") are for training from scratch;
    `light()` is for fine-tuning, `none()` turns every augmentation off."""

    crop_prob: float = 0.8
    scale_range: tuple[float, float] = (0.75, 2.5)  # >1 zooms in (smaller window), <1 zooms out
    aspect_range: tuple[float, float] = (0.75, 1.333)
    hflip_prob: float = 0.5
    colour_prob: float = 0.8
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.3
    copy_paste_prob: float = 0.3
    copy_paste_max: int = 3
    # The pasted layer (the other image's sample) is scaled by a factor log-uniform in this
    # range and placed at a random position; (1, 1) pastes it where it lies in its own image.
    copy_paste_scale: tuple[float, float] = (1.0, 1.0)
    # Object-centred crops: a window around one instance, its side `object_context` times the
    # instance's longer box side (at least `object_min_side` px), cut at the image border; the
    # sample keeps the instances wholly inside it. The view a zoomed box prompt gives the model
    # (see ImagePredictor and the `box_zoom` model option).
    object_crop_prob: float = 0.0
    object_context: tuple[float, float] = (2.0, 4.0)
    object_min_side: int = 64

    @classmethod
    def none(cls) -> "AugmentConfig":
        return cls(crop_prob=0.0, hflip_prob=0.0, colour_prob=0.0, copy_paste_prob=0.0)

    @classmethod
    def light(cls) -> "AugmentConfig":
        """For fine-tuning a pretrained model: flips, mild colour and scale, no copy-paste."""
        return cls(crop_prob=0.3, scale_range=(0.9, 1.25), brightness=0.1, contrast=0.1, saturation=0.1,
                   colour_prob=0.5, copy_paste_prob=0.0)

    @classmethod
    def object(cls) -> "AugmentConfig":
        """`light`, with an object-centred crop in 3 samples of 4: for models run with box zoom."""
        return replace(cls.light(), object_crop_prob=0.75)

    def with_copy_paste(self) -> "AugmentConfig":
        """These augmentations, and copy-paste in COPY_PASTE_PROB of the samples: 1 to 3
        instances of another image, scaled by 0.5 to 1.5 and placed anywhere."""
        return replace(self, copy_paste_prob=COPY_PASTE_PROB, copy_paste_scale=COPY_PASTE_SCALE)

    @classmethod
    def preset(cls, name: str) -> "AugmentConfig":
        """A preset by name; `NAME+copy-paste` adds copy-paste to any preset, and `copy-paste`
        alone is `light+copy-paste`."""
        presets = {"strong": cls, "light": cls.light, "object": cls.object, "none": cls.none}
        base, *extras = name.split("+")
        if base == COPY_PASTE:
            base, extras = "light", [COPY_PASTE, *extras]
        if base not in presets or any(e != COPY_PASTE for e in extras) or len(extras) > 1:
            raise ValueError(f"unknown augmentation {name!r}; choose from {sorted(presets) + [COPY_PASTE]}, "
                             f"or PRESET+{COPY_PASTE}")
        aug = presets[base]()
        return aug.with_copy_paste() if extras else aug


def resize_to_input(image: torch.Tensor, masks: torch.Tensor, image_size: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """image [3, H, W] float in [0, 1], masks [K, H, W] bool -> [3, S, S], [K, S, S] bool,
    with ImageTransforms' resize (bilinear, antialiased, align_corners=False) for both."""
    size = (image_size, image_size)
    image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    if masks.shape[0]:
        masks = F.interpolate(masks[None].float(), size=size, mode="bilinear", align_corners=False,
                              antialias=True)[0] > MASK_RESIZE_THRESHOLD
    else:
        masks = masks.new_zeros((0, *size))
    return image, masks


def normalise(image: torch.Tensor) -> torch.Tensor:
    """[3, S, S] in [0, 1] -> normalised with the ImageNet statistics."""
    mean = torch.tensor(PIXEL_MEAN).view(3, 1, 1)
    std = torch.tensor(PIXEL_STD).view(3, 1, 1)
    return (image - mean) / std


def crop_window(height: int, width: int, aug: AugmentConfig, rng: np.random.Generator
                ) -> tuple[int, int, int, int]:
    """A window (x0, y0, w, h) in image pixels; it may extend past the image (padding)."""
    lo, hi = np.log(aug.scale_range[0]), np.log(aug.scale_range[1])
    scale = float(np.exp(rng.uniform(lo, hi)))
    aspect = float(np.exp(rng.uniform(np.log(aug.aspect_range[0]), np.log(aug.aspect_range[1]))))
    w = max(1, int(round(width / scale * np.sqrt(aspect))))
    h = max(1, int(round(height / scale / np.sqrt(aspect))))
    x0 = int(rng.integers(min(0, width - w), max(0, width - w) + 1))
    y0 = int(rng.integers(min(0, height - h), max(0, height - h) + 1))
    return x0, y0, w, h


def object_window(masks: torch.Tensor, aug: AugmentConfig, rng: np.random.Generator
                  ) -> tuple[int, tuple[int, int, int, int]]:
    """(instance index, window (x0, y0, w, h)) of an object-centred crop of one random instance
    of masks [K, H, W]: a square of `object_context` times the box's longer side, its centre
    moved by up to a tenth of that side, cut at the image border (transforms.box_window, as box
    zoom cuts its crops)."""
    _, height, width = masks.shape
    i = int(rng.integers(0, masks.shape[0]))
    ys = torch.nonzero(masks[i].any(1)).flatten()
    xs = torch.nonzero(masks[i].any(0)).flatten()
    bx0, bx1, by0, by1 = int(xs[0]), int(xs[-1]) + 1, int(ys[0]), int(ys[-1]) + 1
    side = max(rng.uniform(*aug.object_context) * max(bx1 - bx0, by1 - by0), aug.object_min_side)
    cx = (bx0 + bx1) / 2 + rng.uniform(-0.1, 0.1) * side
    cy = (by0 + by1) / 2 + rng.uniform(-0.1, 0.1) * side
    x0, y0, x1, y1 = box_window((bx0, by0, bx1, by1), side, (cx, cy), (height, width))
    return i, (x0, y0, x1 - x0, y1 - y0)


def crop(image: torch.Tensor, masks: torch.Tensor, window: tuple[int, int, int, int]
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut window (x0, y0, w, h) out of image [3, H, W] and masks [K, H, W]; outside the
    image, the image is the mean pixel and the masks are empty."""
    x0, y0, w, h = window
    _, height, width = image.shape
    fill = torch.tensor(PIXEL_MEAN, dtype=image.dtype).view(3, 1, 1)
    out_image = fill.expand(3, h, w).clone()
    out_masks = masks.new_zeros((masks.shape[0], h, w))
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x0 + w, width), min(y0 + h, height)
    if sx1 > sx0 and sy1 > sy0:
        out_image[:, sy0 - y0: sy1 - y0, sx0 - x0: sx1 - x0] = image[:, sy0:sy1, sx0:sx1]
        out_masks[:, sy0 - y0: sy1 - y0, sx0 - x0: sx1 - x0] = masks[:, sy0:sy1, sx0:sx1]
    return out_image, out_masks


def colour_jitter(image: torch.Tensor, aug: AugmentConfig, rng: np.random.Generator) -> torch.Tensor:
    """Brightness, contrast and saturation factors in [1 - s, 1 + s] on [3, H, W] in [0, 1]."""
    gray_weights = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
    b = rng.uniform(1 - aug.brightness, 1 + aug.brightness)
    c = rng.uniform(1 - aug.contrast, 1 + aug.contrast)
    s = rng.uniform(1 - aug.saturation, 1 + aug.saturation)
    image = image * float(b)
    mean = (image * gray_weights).sum(0).mean()
    image = (image - mean) * float(c) + mean
    gray = (image * gray_weights).sum(0, keepdim=True)
    image = (image - gray) * float(s) + gray
    return image.clamp(0, 1)
