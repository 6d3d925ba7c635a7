"""Interactive-segmentation benchmarks shipped as an image folder and a mask folder
(`segapp eval folder`): GrabCut, Berkeley, DAVIS-345, COCO-MVal and your own.

    images/  a.jpg  b.jpg ...      masks/  a.png  b.png ...   (matched by file stem)

Each mask file is a palette PNG (one instance per index, 255 = void read as background) or a
0/255 grayscale mask (one instance), read by segapp.formats.label_masks. Every instance is
evaluated as `segapp eval coco` evaluates a COCO instance (same prompts, clicks, metrics and
outputs, segapp.evaluation.runner); its box is the mask's box on pixel edges and its `area`,
which decides small / medium / large, is its pixel count.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from segapp.evaluation.coco import (BAD_INPUT_SKIPS, SKIP_EMPTY_MASK, SKIP_IMAGE_SIZE,
                                    SKIP_MALFORMED, SKIP_MISSING_IMAGE, SKIP_UNREADABLE_IMAGE,
                                    ImageEntry, Instance, Skipped, read_image_or_skip)
from segapp.formats.label_masks import LabelMaskError, object_ids, read_label_mask
from segapp.formats.boxes import mask_to_edge_box
from segapp.formats.media import IMAGE_SUFFIXES
from segapp.video.frames import natural_key

MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")
CATEGORY_ID, CATEGORY = 1, "object"
SKIP_MISSING_MASK = "missing_mask_file"  # an image without a mask of the same stem
FOLDER_BAD_INPUT_SKIPS = (*BAD_INPUT_SKIPS, SKIP_MISSING_MASK)

INSTANCE_RULE = ("each object id (palette index, or 255 of a 0/255 mask) of each mask file "
                 "matched to an image by file stem, whose mask has at least one pixel; images in "
                 "natural order of their names, instances in order of id")
RULE_OVERRIDES = {
    "box": "the instance mask's box on pixel edges (x0 = leftmost column, x1 = rightmost "
           "column + 1) as the box prompt; single-mask output",
    "area_ranges": "small: < 32² pixels, medium: < 96² pixels, large: the rest (the instance "
                   "mask's pixel count)",
}


class FolderDatasetError(ValueError):
    """The folders cannot be used at all (missing, empty, or two files of one stem)."""


@dataclass
class FolderInstances:
    """Images (numbered 1.. in natural order of their names) with their mask's instances."""

    images_dir: Path
    masks_dir: Path
    images: list[ImageEntry]
    skipped: list[Skipped] = field(default_factory=list)
    instance_rule = INSTANCE_RULE
    rule_overrides = RULE_OVERRIDES

    @property
    def file_names(self) -> dict[int, str]:
        return {e.image_id: e.file_name for e in self.images}

    def describe(self) -> dict:
        return {"images_dir": str(self.images_dir), "masks_dir": str(self.masks_dir)}

    def iter_images(self, skipped: list[Skipped] | None = None) -> Iterator[
            tuple[ImageEntry, np.ndarray, list[tuple[Instance, np.ndarray]]]]:
        """Yield (entry, image [H, W, 3] uint8 RGB, [(instance, mask [H, W] bool), ...]);
        unreadable images are appended to `skipped` and not yielded."""
        found: list[Skipped] = [] if skipped is None else skipped
        for entry in self.images:
            image = read_image_or_skip(entry, found)
            if image is None:
                continue
            ids = read_label_mask(entry.instances[0].segmentation)
            yield entry, image, [(inst, ids == inst.annotation_id) for inst in entry.instances]


def _by_stem(folder: Path, suffixes: tuple[str, ...], what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise FolderDatasetError(f"{what} folder not found: {folder}")
    found: dict[str, Path] = {}
    for name in sorted(os.listdir(folder), key=natural_key):
        path = folder / name
        if not name.lower().endswith(suffixes) or not path.is_file():
            continue
        if path.stem in found:
            raise FolderDatasetError(f"two {what} files named {path.stem}: {found[path.stem].name} "
                                     f"and {name} in {folder}; keep one per name")
        found[path.stem] = path
    if not found:
        raise FolderDatasetError(f"no {what} files ({', '.join(suffixes)}) in {folder}")
    return found


def load_folder(images_dir: str | Path, masks_dir: str | Path, *,
                max_images: int | None = None) -> FolderInstances:
    """Match masks to images by stem and read every mask's instances.

    Images without a mask, masks without an image, unreadable or malformed masks (values that
    are neither a palette nor 0/255) and masks whose size differs from the image's are skipped
    with a reason naming the file; a mask without any object is skipped as `empty_mask`.
    `max_images` keeps the first N images. Raises FolderDatasetError when a folder is missing or
    has no file, or two files share a stem.
    """
    from PIL import Image

    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    images = _by_stem(images_dir, IMAGE_SUFFIXES, "image")
    masks = _by_stem(masks_dir, MASK_SUFFIXES, "mask")
    skipped: list[Skipped] = []
    for stem in (s for s in masks if s not in images):
        skipped.append(Skipped(None, None, SKIP_MISSING_IMAGE,
                               f"mask {masks[stem]} has no image {stem}.* in {images_dir}"))
    stems = list(images)[:max_images] if max_images is not None else list(images)
    entries: list[ImageEntry] = []
    for image_id, stem in enumerate(stems, start=1):
        image_path = images[stem]
        if stem not in masks:
            skipped.append(Skipped(image_id, None, SKIP_MISSING_MASK,
                                   f"image {image_path} has no mask {stem}.* in {masks_dir}"))
            continue
        mask_path = masks[stem]
        try:
            ids = read_label_mask(mask_path)
        except LabelMaskError as err:
            skipped.append(Skipped(image_id, None, SKIP_MALFORMED, str(err)))
            continue
        try:
            with Image.open(image_path) as image:
                image_hw = image.size[::-1]
        except (OSError, SyntaxError, ValueError) as err:
            skipped.append(Skipped(image_id, None, SKIP_UNREADABLE_IMAGE,
                                   f"cannot read image {image_path}: {err}"))
            continue
        if ids.shape != image_hw:
            skipped.append(Skipped(image_id, None, SKIP_IMAGE_SIZE,
                                   f"mask {mask_path} is {ids.shape[1]}x{ids.shape[0]}, image "
                                   f"{image_path.name} is {image_hw[1]}x{image_hw[0]}"))
            continue
        present = object_ids(ids)
        if not present:
            skipped.append(Skipped(image_id, None, SKIP_EMPTY_MASK, f"mask {mask_path} has no object"))
            continue
        instances = tuple(
            Instance(annotation_id=oid, image_id=image_id, category_id=CATEGORY_ID,
                     category=CATEGORY, area=float(np.count_nonzero(ids == oid)),
                     bbox_xyxy=tuple(float(v) for v in mask_to_edge_box(ids == oid)), iscrowd=False,
                     segmentation=mask_path)
            for oid in present)
        entries.append(ImageEntry(image_id, image_path.name, ids.shape[0], ids.shape[1],
                                  image_path, instances))
    return FolderInstances(images_dir, masks_dir, entries, skipped)
