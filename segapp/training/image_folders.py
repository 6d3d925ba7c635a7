"""Unlabelled images from folders, as augmented model inputs (`segapp pretrain`).

Sources:
- image folders, read recursively (.jpg, .jpeg, .png, any case); a folder in the DAVIS layout
  (`JPEGImages/` beside `Annotations/`) is read from `JPEGImages/` only, so its masks are not
  taken for photos;
- video frame folders: `JPEGImages/<seq>/*.jpg` (DAVIS) or `<seq>/*.jpg`, every frame an image.

Files are checked when the dataset is built (the header is read; files that cannot be opened as
images are skipped, counted and named in one warning; none readable is an error). A file that
still fails to decode later is replaced by the next file of the list, with a warning.

Augmentation (MAE's): a random resized crop, area a fraction `scale` of the image (uniform) at
aspect ratio `ratio` (log-uniform), resized to image_size x image_size, then a horizontal flip
with probability 1/2; drawn from a NumPy generator seeded by (seed, epoch, index), so a sample
is the same whenever it is drawn again (resume). Pixels are normalised with the ImageNet
statistics the model uses.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from segapp.formats.media import FRAME_SUFFIXES, is_video
from segapp.transforms import PIXEL_MEAN, PIXEL_STD

logger = logging.getLogger(__name__)

# Pretraining reads JPEG and PNG files, the frame formats of video folders (segapp.formats.media).
IMAGE_SUFFIXES = FRAME_SUFFIXES
# Random-resized-crop tries before falling back to the centred largest crop (as torchvision).
CROP_ATTEMPTS = 10
# Files tried in turn when one fails to decode during training.
DECODE_FALLBACKS = 10


class NoImagesError(ValueError):
    """A source folder (or all of them) holds no readable image."""


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def find_images(folders: Sequence[str | Path] = (), video_folders: Sequence[str | Path] = ()) -> list[Path]:
    """Every image file of the sources (see the module docstring), sorted per folder.
    NoImagesError names a folder that is missing or holds no image."""
    files: list[Path] = []
    for folder, kind in [(Path(f), "images") for f in folders] + [(Path(f), "videos") for f in video_folders]:
        if not folder.is_dir():
            raise NoImagesError(f"--{kind} folder not found: {folder}")
        root = folder
        if (folder / "JPEGImages").is_dir() and (kind == "videos" or (folder / "Annotations").is_dir()):
            root = folder / "JPEGImages"
            logger.info("%s: DAVIS layout, reading frames from %s", folder, root)
        found = _images_under(root)
        if not found:
            videos = [p.name for p in root.rglob("*") if is_video(p)][:3]
            hint = (f" (video files such as {', '.join(videos)} are not read: extract their frames as "
                    "JPEG into <seq>/ folders)") if videos else ""
            raise NoImagesError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in --{kind} folder {folder}{hint}")
        logger.info("%s: %d images", folder, len(found))
        files.extend(found)
    if not files:
        raise NoImagesError("no image folders given: pass --images DIR and/or --videos DIR")
    return files


def readable(files: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """Split files into (readable, unreadable) by opening each image's header."""
    from PIL import Image, UnidentifiedImageError

    good, bad = [], []
    for f in files:
        try:
            with Image.open(f) as im:
                w, h = im.size
            (good if w > 0 and h > 0 else bad).append(f)
        except (OSError, UnidentifiedImageError, ValueError):
            bad.append(f)
    return good, bad


def sample_crop(width: int, height: int, scale: tuple[float, float], ratio: tuple[float, float],
                rng: np.random.Generator) -> tuple[float, float, float, float]:
    """A random-resized-crop window (x0, y0, x1, y1) in pixels of a width x height image."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(CROP_ATTEMPTS):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = math.sqrt(target * aspect), math.sqrt(target / aspect)
        if 0 < w <= width and 0 < h <= height:
            x0, y0 = rng.uniform(0, width - w), rng.uniform(0, height - h)
            return x0, y0, x0 + w, y0 + h
    # Fallback: the largest centred window within the aspect range.
    aspect = min(max(width / height, ratio[0]), ratio[1])
    w, h = (width, width / aspect) if width / height < aspect else (height * aspect, height)
    x0, y0 = (width - w) / 2, (height - h) / 2
    return x0, y0, x0 + w, y0 + h


class ImageFolderDataset(torch.utils.data.Dataset):
    """Images from folders as augmented [3, S, S] float inputs; see the module docstring.

    Args:
      folders, video_folders: the sources.
      image_size: side S of the model input.
      scale, ratio: random-resized-crop area fraction and aspect range; flip: horizontal flips.
      augment: False gives the whole image resized to S x S (no crop, no flip).
      seed: seed of every random choice.
      max_images: keep the first N files only.
    """

    def __init__(self, folders: Sequence[str | Path] = (), video_folders: Sequence[str | Path] = (), *,
                 image_size: int, scale: tuple[float, float] = (0.2, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), augment: bool = True, seed: int = 0,
                 max_images: int | None = None) -> None:
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"crop scale must satisfy 0 < min <= max <= 1, got {scale}")
        files = find_images(folders, video_folders)
        files, bad = readable(files)
        self.skipped = [str(p) for p in bad]
        if bad:
            shown = ", ".join(str(p) for p in bad[:5]) + (f", ... ({len(bad) - 5} more)" if len(bad) > 5 else "")
            logger.warning("skipped %d unreadable image files: %s", len(bad), shown)
        if not files:
            raise NoImagesError(f"none of the {len(bad)} image files could be read (e.g. {bad[0]})")
        self.files = files[:max_images] if max_images else files
        self.image_size = image_size
        self.scale, self.ratio, self.augment, self.seed = scale, ratio, augment, seed
        self.epoch = 0
        self._mean = np.asarray(PIXEL_MEAN, np.float32) * 255
        self._std = np.asarray(PIXEL_STD, np.float32) * 255

    def __len__(self) -> int:
        return len(self.files)

    def set_epoch(self, epoch: int) -> None:
        """Augmentations are drawn per (seed, epoch, index)."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> torch.Tensor:
        from PIL import UnidentifiedImageError

        for attempt in range(DECODE_FALLBACKS):
            i = (index + attempt) % len(self.files)
            try:
                return self.load(i)
            except (OSError, UnidentifiedImageError, ValueError) as err:
                logger.warning("cannot decode %s (%s); using the next image instead", self.files[i], err)
        raise NoImagesError(f"{DECODE_FALLBACKS} image files in a row from {self.files[index]} fail to decode")

    def load(self, index: int) -> torch.Tensor:
        """Sample `index` of the current epoch: [3, S, S] float32, normalised."""
        from PIL import Image, ImageOps

        rng = np.random.default_rng([self.seed, self.epoch, index])
        size = self.image_size
        with Image.open(self.files[index]) as im:
            # EXIF orientation (as viewers show the image), read from the header before decoding.
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)
            if orientation in (5, 6, 7, 8):
                w, h = h, w
            box = sample_crop(w, h, self.scale, self.ratio, rng) if self.augment else (0.0, 0.0, w, h)
            # JPEG: decode at a reduced scale when the crop stays at least `size` px there.
            # (The request is in the file's own orientation.)
            need = (math.ceil(size * w / (box[2] - box[0])), math.ceil(size * h / (box[3] - box[1])))
            im.draft("RGB", need[::-1] if orientation in (5, 6, 7, 8) else need)
            im = ImageOps.exif_transpose(im).convert("RGB")
            sx, sy = im.width / w, im.height / h
            crop = (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
            out = im.resize((size, size), Image.Resampling.BILINEAR, box=crop)
        arr = np.asarray(out, dtype=np.float32)
        if self.augment and rng.random() < 0.5:
            arr = arr[:, ::-1]
        arr = (arr - self._mean) / self._std
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
