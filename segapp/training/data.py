"""COCO-format instance masks as training samples: images at the model input with their masks.

Geometry is that of `segapp.transforms.ImageTransforms` (`augment.resize_to_input`): without
augmentation, a sample's image is exactly `ImageTransforms(image_size).to_input([image])`.

Augmentation (`augment.AugmentConfig` and its pure steps; each step drawn from a NumPy
generator seeded by (seed, epoch, index), so a sample is the same whenever it is drawn again,
e.g. after resuming):
- scale and crop: a window of the image of 1/scale its side (scale log-uniform in
  `scale_range`, aspect jittered) at a random place; windows larger than the image are padded
  with the mean pixel (which normalises to 0), so scales below 1 zoom out;
- horizontal flip;
- colour jitter: brightness, contrast and saturation;
- copy-paste: instances of another image (itself scaled, cropped and flipped, then optionally
  scaled again and moved: `copy_paste_scale`) pasted on top; the masks they cover lose those
  pixels, and masks left under `min_mask_pixels` (pasted ones too) are dropped.
Instances left with fewer than `min_mask_pixels` pixels are dropped; up to
`instances_per_image` of the rest are drawn.

Annotations and images that cannot be used (missing or unreadable files, malformed or empty
masks, crowd regions) are skipped and counted in `skip_counts`, with a warning each.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from segapp.training.augment import (AugmentConfig, colour_jitter, crop, crop_window, normalise, object_window,
                                     resize_to_input)

logger = logging.getLogger(__name__)

# New crops tried when augmentation leaves no instance, before falling back to the whole image.
MAX_CROP_ATTEMPTS = 5


@dataclass
class Sample:
    """image: [3, S, S] float, normalised; masks: [K, S, S] bool, K >= 1; image_id: COCO id."""

    image: torch.Tensor
    masks: torch.Tensor
    image_id: int


@dataclass
class Batch:
    """images: [B, 3, S, S]; masks: [P, S, S] bool (all instances of all images);
    image_index: [P] long, the image of each instance."""

    images: torch.Tensor
    masks: torch.Tensor
    image_index: torch.Tensor
    image_ids: list[int] = field(default_factory=list)

    def to(self, device: torch.device) -> "Batch":
        return Batch(self.images.to(device, non_blocking=True), self.masks.to(device, non_blocking=True),
                     self.image_index.to(device, non_blocking=True), self.image_ids)


def collate(samples: list[Sample]) -> Batch:
    images = torch.stack([s.image for s in samples])
    masks = torch.cat([s.masks for s in samples])
    index = torch.cat([torch.full((len(s.masks),), i, dtype=torch.long) for i, s in enumerate(samples)])
    return Batch(images, masks, index, [s.image_id for s in samples])


# ------------------------------------------------------------------------------------ dataset
def load_coco_sources(annotations: str | Path | Sequence[str | Path], images_dirs: str | Path | Sequence[str | Path],
                      max_images: int | None = None):
    """One or several COCO instances files (each with its images folder) as one
    `segapp.evaluation.CocoInstances`: images and skipped records concatenated in the order
    given, categories merged (COCO's ids). `max_images` applies to each source."""
    from segapp.evaluation.coco import CocoInstances, load_coco_instances

    if isinstance(annotations, (str, Path)):
        annotations = [annotations]
    if isinstance(images_dirs, (str, Path)):
        images_dirs = [images_dirs]
    if len(annotations) != len(images_dirs) or not annotations:
        raise ValueError(f"{len(annotations)} annotation files for {len(images_dirs)} image folders")
    parts = [load_coco_instances(a, d, max_images=max_images) for a, d in zip(annotations, images_dirs)]
    if len(parts) == 1:
        return parts[0]
    merged = CocoInstances(parts[0].annotations_path, parts[0].images_dir, [], {}, [])
    for part in parts:
        merged.images.extend(part.images)
        merged.skipped.extend(part.skipped)
        merged.categories.update(part.categories)
    return merged


class CocoInstanceDataset(torch.utils.data.Dataset):
    """Training samples from a COCO instances file.

    Args:
      annotations, images_dir: the COCO instances JSON and the folder of its images, or lists
        of them (several datasets as one; see `load_coco_sources`).
      image_size: side of the model input S.
      instances_per_image: at most this many instances are drawn per sample.
      augment: augmentation strengths (AugmentConfig.none() for none).
      seed: with the epoch (`set_epoch`) and the index, decides every random choice.
      min_mask_pixels: instances smaller than this at the model input are dropped.
      max_images: use the first N images (by image id) only.
    """

    def __init__(self, annotations: str | Path | Sequence[str | Path],
                 images_dir: str | Path | Sequence[str | Path], image_size: int,
                 instances_per_image: int = 8, augment: AugmentConfig | None = None, seed: int = 0,
                 min_mask_pixels: int = 16, max_images: int | None = None) -> None:
        self.image_size = image_size
        self.instances_per_image = instances_per_image
        self.augment = augment if augment is not None else AugmentConfig()
        self.seed = seed
        self.epoch = 0
        self.min_mask_pixels = min_mask_pixels
        self.coco = load_coco_sources(annotations, images_dir, max_images=max_images)
        self.entries = list(self.coco.images)
        self.skip_counts: Counter[str] = Counter(s.reason for s in self.coco.skipped)
        self._bad_images: set[int] = set()
        self._bad_annotations: set[int] = set()
        for reason, count in sorted(self.skip_counts.items()):
            logger.warning("skipped %d annotation(s): %s", count, reason)
        if not self.entries:
            raise ValueError(f"no usable image with instance masks in {images_dir} ({annotations})")

    def __len__(self) -> int:
        return len(self.entries)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _skip(self, reason: str, key: int, bad: set[int], detail: str) -> None:
        if key not in bad:
            bad.add(key)
            self.skip_counts[reason] += 1
            logger.warning("skipped (%s): %s", reason, detail)

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The image [3, H, W] float in [0, 1] and its non-empty masks [K, H, W] bool at the
        original size; None (counted) when the image or all its masks are unusable."""
        from segapp.evaluation.coco import decode_segmentation, read_image

        entry = self.entries[index]
        try:
            rgb = read_image(entry)
        except ValueError as err:
            self._skip("unreadable_image", entry.image_id, self._bad_images, str(err))
            return None
        masks = []
        for inst in entry.instances:
            try:
                mask = decode_segmentation(inst.segmentation, entry.height, entry.width)
            except (ValueError, TypeError, KeyError) as err:
                self._skip("malformed_annotation", inst.annotation_id, self._bad_annotations,
                           f"annotation {inst.annotation_id}: {err}")
                continue
            if not mask.any():
                self._skip("empty_mask", inst.annotation_id, self._bad_annotations,
                           f"annotation {inst.annotation_id} of image {entry.image_id}")
                continue
            masks.append(mask)
        if not masks:
            self._skip("no_usable_instance", entry.image_id, self._bad_images,
                       f"image {entry.image_id} has no usable instance mask")
            return None
        image = torch.from_numpy(rgb).permute(2, 0, 1).float().div(255)
        return image, torch.from_numpy(np.stack(masks))

    def _geometric(self, image: torch.Tensor, masks: torch.Tensor, rng: np.random.Generator,
                   augment: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale/crop, resize to the input and flip; drops instances that became too small."""
        aug = self.augment
        if augment and aug.object_crop_prob > 0 and rng.random() < aug.object_crop_prob:
            chosen, window = object_window(masks, aug, rng)
            img_c, masks_c = crop(image, masks, window)
            whole = masks_c.flatten(1).sum(1) == masks.flatten(1).sum(1)  # not cut by the window
            whole[chosen] = True
            image, masks = self._plain(img_c, masks_c[whole])
        elif augment and rng.random() < aug.crop_prob:
            _, h, w = image.shape
            for _ in range(MAX_CROP_ATTEMPTS):
                img_c, masks_c = crop(image, masks, crop_window(h, w, aug, rng))
                img_c, masks_c = resize_to_input(img_c, masks_c, self.image_size)
                keep = masks_c.flatten(1).sum(1) >= self.min_mask_pixels
                if keep.any():
                    image, masks = img_c, masks_c[keep]
                    break
            else:
                image, masks = self._plain(image, masks)
        else:
            image, masks = self._plain(image, masks)
        if augment and rng.random() < aug.hflip_prob:
            image, masks = image.flip(-1), masks.flip(-1)
        return image, masks

    def _plain(self, image: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image, masks = resize_to_input(image, masks, self.image_size)
        return image, masks[masks.flatten(1).sum(1) >= self.min_mask_pixels]

    def _copy_paste(self, index: int, image: torch.Tensor, masks: torch.Tensor,
                    rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Paste 1..copy_paste_max instances of another image on top of this one."""
        if len(self.entries) < 2:
            return image, masks
        other = int(rng.integers(0, len(self.entries) - 1))
        other += other >= index  # any image but this one
        loaded = self.load(other)
        if loaded is None:
            return image, masks
        src_image, src_masks = self._geometric(*loaded, rng, augment=True)
        if not len(src_masks):
            return image, masks
        count = int(rng.integers(1, min(self.augment.copy_paste_max, len(src_masks)) + 1))
        chosen = rng.choice(len(src_masks), size=count, replace=False)
        pasted = src_masks[torch.from_numpy(np.sort(chosen))]
        lo, hi = self.augment.copy_paste_scale
        if (lo, hi) != (1.0, 1.0):
            src_image, pasted = self._scaled_layer(src_image, pasted, float(np.exp(rng.uniform(np.log(lo), np.log(hi)))),
                                                   rng)
        # Later pasted instances cover earlier ones, as they do the image's own.
        for i in range(len(pasted) - 1):
            pasted[i] &= ~pasted[i + 1:].any(0)
        union = pasted.any(0)
        image = torch.where(union, src_image, image)
        masks = torch.cat([masks & ~union, pasted])
        return image, masks[masks.flatten(1).sum(1) >= self.min_mask_pixels]

    def _scaled_layer(self, image: torch.Tensor, masks: torch.Tensor, scale: float, rng: np.random.Generator
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """The S x S layer image [3, S, S] with masks [K, S, S] scaled by `scale` (same resize as
        the input: bilinear, masks thresholded at half) and placed at a random position on an
        S x S canvas; what falls outside is cut, the rest of the canvas has no mask."""
        size = self.image_size
        side = max(1, int(round(size * scale)))
        image, masks = resize_to_input(image, masks, side)
        x0 = int(rng.integers(min(0, size - side), max(0, size - side) + 1))
        y0 = int(rng.integers(min(0, size - side), max(0, size - side) + 1))
        return crop(image, masks, (-x0, -y0, size, size))

    def sample(self, index: int, epoch: int | None = None) -> Sample | None:
        """The sample of image `index` at `epoch` (default: the current one); None when the
        image is unusable."""
        epoch = self.epoch if epoch is None else epoch
        rng = np.random.default_rng([self.seed, epoch, index])
        loaded = self.load(index)
        if loaded is None:
            return None
        image, masks = self._geometric(*loaded, rng, augment=True)
        aug = self.augment
        if rng.random() < aug.colour_prob:
            image = colour_jitter(image, aug, rng)
        if rng.random() < aug.copy_paste_prob:
            image, masks = self._copy_paste(index, image, masks, rng)
        if not len(masks):  # everything too small at this input size
            self._skip("below_min_pixels", self.entries[index].image_id, self._bad_images,
                       f"image {self.entries[index].image_id}: every instance is under "
                       f"{self.min_mask_pixels} pixels at {self.image_size} px")
            return None
        if len(masks) > self.instances_per_image:
            keep = np.sort(rng.choice(len(masks), size=self.instances_per_image, replace=False))
            masks = masks[torch.from_numpy(keep)]
        return Sample(normalise(image), masks, self.entries[index].image_id)

    def __getitem__(self, key: int | tuple[int, int]) -> Sample:
        """The sample of `index` (key: index, or (epoch, index) as EpochSampler gives them), or
        of the next usable image when it is unusable."""
        epoch, index = key if isinstance(key, tuple) else (None, key)
        for step in range(len(self.entries)):
            sample = self.sample((index + step) % len(self.entries), epoch)
            if sample is not None:
                return sample
        raise RuntimeError("no image of the dataset is usable (see the warnings above)")


class EpochSampler(torch.utils.data.Sampler):
    """The keys of one epoch: (epoch, index) pairs in a permutation seeded by (seed, epoch),
    the first `count` of it. The epoch travels with each index, so data-loading workers that
    live across epochs (persistent workers) make every sample from (seed, epoch, index) alone
    and keep no random state of their own: a resumed run draws the same samples."""

    def __init__(self, size: int, seed: int, count: int | None = None) -> None:
        self.size, self.seed = size, seed
        self.count = size if count is None else min(count, size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self, epoch: int) -> list[int]:
        return np.random.default_rng([self.seed, epoch]).permutation(self.size)[: self.count].tolist()

    def __iter__(self):
        epoch = self.epoch
        return iter([(epoch, i) for i in self.order(epoch)])

    def __len__(self) -> int:
        return self.count
