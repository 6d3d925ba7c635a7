"""Clips of N frames with per-object masks, for training the video memory (`segapp train-video`).

Two sources, both yielding `Clip`s at the model input (S x S, stretched as
`segapp.transforms.ImageTransforms` does):
- `VideoFolderClips`: folders in the DAVIS layout, `JPEGImages/<seq>/*.jpg` with
  `Annotations/<seq>/*.png` of the same names (0/255 single-object masks, or palette / id masks
  whose non-zero values are object ids; 255 is "void" when other ids are present: the id-mask
  rule of `segapp.formats.label_masks`). A clip is
  N consecutive frames from a random start.
- `CocoPseudoClips`: COCO images as pseudo-clips, the same image under a progressive affine
  jitter (a small random translation, scale and rotation added frame after frame), the masks
  warped by the very same sampling grid, so an object drifts, turns and may leave the view.

Geometry (`clip_augment`): every frame of a clip is resized to S x S first, then warped by an
affine map, the masks on the same sampling grid. Augmentation of real videos is consistent
over the clip (one flip, one affine map, one colour jitter for every frame).

Randomness comes from a NumPy generator seeded by (seed, epoch, index): a clip is the same
whenever it is drawn again, e.g. after resuming. Objects are those visible (at least
`min_mask_pixels` pixels) on the clip's first frame, at most `max_objects` of them; they may be
absent later (then the object-score loss teaches "absent").

Bad input: an empty or malformed folder, a sequence without annotations, masks whose count or
size does not match their frames raise `VideoDataError` naming the sequence and file.
Frames or masks that cannot be decoded are skipped (that frame leaves its sequence) and
counted in `skip_counts`, with a warning naming the file.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from segapp.formats.label_masks import LabelMaskError, UnreadableMaskError, read_label_mask
from segapp.formats.media import FRAME_SUFFIXES
from segapp.training.augment import colour_jitter, normalise, resize_to_input
from segapp.training.clip_augment import ClipAugment, drift, random_affine, warp
from segapp.training.data import load_coco_sources

logger = logging.getLogger(__name__)

MASK_SUFFIX = ".png"
# Starts tried when a clip's first frame has no usable object, before moving to the next item.
MAX_CLIP_ATTEMPTS = 4


class VideoDataError(ValueError):
    """A video folder that cannot be used as it is (named in the message, with what is wrong)."""


@dataclass
class Clip:
    """frames: [T, 3, S, S] float, normalised; masks: [T, K, S, S] bool, K objects (each visible
    on frame 0); name: where the clip comes from (sequence and first frame, or COCO image id)."""

    frames: torch.Tensor
    masks: torch.Tensor
    name: str


def choose_objects(first: torch.Tensor, min_pixels: int, max_objects: int, rng: np.random.Generator | None
                   ) -> torch.Tensor:
    """Indices of the objects of a clip: those with at least `min_pixels` on the first frame
    ([K, S, S] bool), at most `max_objects`, drawn at random (rng) or the first ones (None)."""
    visible = torch.nonzero(first.flatten(1).sum(1) >= min_pixels).flatten()
    if len(visible) > max_objects:
        if rng is None:
            visible = visible[:max_objects]
        else:
            visible = visible[torch.from_numpy(np.sort(rng.choice(len(visible), max_objects, replace=False)))]
    return visible


# ------------------------------------------------------------------------------------ videos
@dataclass
class VideoSequence:
    """One sequence: its frames and masks, in order (the same stems)."""

    name: str
    frames: list[Path]
    masks: list[Path]


def _image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the file header, None when it cannot be opened."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, UnidentifiedImageError, ValueError):
        return None


def scan_video_folder(root: str | Path, skip_counts: Counter | None = None) -> list[VideoSequence]:
    """The sequences of a DAVIS-layout folder (`JPEGImages/<seq>/`, `Annotations/<seq>/`; the
    `480p` resolution subfolders of full DAVIS are used when present).

    Raises VideoDataError for a missing or empty folder, a sequence without an annotation folder,
    frames without a mask or masks without a frame, and a mask whose size differs from its
    frame's. Files whose header cannot be read are skipped (counted, with a warning).
    """
    root = Path(root)
    skip_counts = Counter() if skip_counts is None else skip_counts
    if not root.is_dir():
        raise VideoDataError(f"video folder not found: {root}")
    images, annotations = root / "JPEGImages", root / "Annotations"
    if not images.is_dir() or not annotations.is_dir():
        raise VideoDataError(f"{root} is not in the DAVIS layout: expected JPEGImages/<sequence>/*.jpg and "
                             "Annotations/<sequence>/*.png in it")
    if (images / "480p").is_dir() and (annotations / "480p").is_dir():
        images, annotations = images / "480p", annotations / "480p"
    names = sorted(p.name for p in images.iterdir() if p.is_dir())
    if not names:
        raise VideoDataError(f"{images} holds no sequence folder")
    sequences = []
    for name in names:
        frames = sorted(p for p in (images / name).iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
        if not frames:
            raise VideoDataError(f"sequence {name}: no frames (.jpg/.png) in {images / name}")
        mask_dir = annotations / name
        if not mask_dir.is_dir():
            raise VideoDataError(f"sequence {name} has no annotations: {mask_dir} does not exist "
                                 "(training needs a mask PNG for every frame)")
        masks = {p.stem: p for p in mask_dir.iterdir() if p.suffix.lower() == MASK_SUFFIX}
        stems = [f.stem for f in frames]
        missing = [f for f in frames if f.stem not in masks]
        extra = sorted(set(masks) - set(stems))
        if missing or extra:
            detail = (f"frame {missing[0].name} has no mask {mask_dir / (missing[0].stem + MASK_SUFFIX)}" if missing
                      else f"mask {masks[extra[0]].name} has no frame in {images / name}")
            raise VideoDataError(f"sequence {name}: {len(masks)} masks for {len(frames)} frames ({detail}); "
                                 "training needs one mask PNG per frame, of the same name")
        kept_frames, kept_masks = [], []
        for frame in frames:
            mask = masks[frame.stem]
            frame_size, mask_size = _image_size(frame), _image_size(mask)
            if frame_size is None or mask_size is None:
                bad = frame if frame_size is None else mask
                skip_counts["unreadable_frame"] += 1
                logger.warning("skipped (unreadable): %s", bad)
                continue
            if frame_size != mask_size:
                raise VideoDataError(f"sequence {name}: mask {mask} is {mask_size[0]}x{mask_size[1]}, its frame "
                                     f"{frame} is {frame_size[0]}x{frame_size[1]}")
            kept_frames.append(frame)
            kept_masks.append(mask)
        if len(kept_frames) < 2:
            skip_counts["short_sequence"] += 1
            logger.warning("skipped sequence %s: fewer than 2 usable frames", name)
            continue
        sequences.append(VideoSequence(name, kept_frames, kept_masks))
    if not sequences:
        raise VideoDataError(f"{root}: no sequence with at least 2 usable frames")
    return sequences


class ClipDataset(torch.utils.data.Dataset):
    """Common part of the clip sources: epoch, seeding, skip counts, the retry over items."""

    def __init__(self, image_size: int, clip_frames: int, max_objects: int, augment: ClipAugment | None,
                 seed: int, min_mask_pixels: int) -> None:
        if clip_frames < 2:
            raise ValueError(f"clip_frames must be at least 2, got {clip_frames}")
        if max_objects < 1:
            raise ValueError(f"max_objects must be at least 1, got {max_objects}")
        self.image_size = image_size
        self.clip_frames = clip_frames
        self.max_objects = max_objects
        self.augment = augment if augment is not None else ClipAugment()
        self.seed = seed
        self.min_mask_pixels = min_mask_pixels
        self.epoch = 0
        self.skip_counts: Counter[str] = Counter()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def clip(self, index: int, epoch: int | None = None) -> Clip | None:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Clip:
        """The clip of `index`, or of the next usable item when it has none."""
        for step in range(len(self)):
            clip = self.clip((index + step) % len(self))
            if clip is not None:
                return clip
        raise RuntimeError("no item of the clip dataset is usable (see the warnings above)")

    def _finish(self, images: torch.Tensor, masks: torch.Tensor, forward: np.ndarray, name: str,
                rng: np.random.Generator | None, colour: bool) -> Clip | None:
        """Warp [T, 3, S, S] / [T, K, S, S] by forward maps [T, 3, 3], choose the objects, jitter
        colours (the same for every frame), normalise."""
        images, masks = warp(images, masks, forward)
        chosen = choose_objects(masks[0], self.min_mask_pixels, self.max_objects, rng)
        if not len(chosen):
            return None
        if colour and rng is not None and rng.random() < self.augment.colour_prob:
            # colour_jitter draws its factors from rng: reseed a copy per frame for one jitter.
            state = rng.bit_generator.state
            jittered = []
            for frame in images:
                rng.bit_generator.state = state
                jittered.append(colour_jitter(frame, self.augment, rng))
            images = torch.stack(jittered)
        return Clip(torch.stack([normalise(f) for f in images]), masks[:, chosen], name)


class VideoFolderClips(ClipDataset):
    """Clips from DAVIS-layout folders: one item per sequence; each draw takes `clip_frames`
    consecutive frames from a random start (all of them, from the first frame, with `val=True`:
    no augmentation, the first `max_objects` objects).

    Args:
      roots: one or several DAVIS-layout folders.
      image_size: model input side S.
      clip_frames: frames per clip (shorter sequences give shorter clips).
      max_objects: objects per clip (those visible on its first frame).
      augment: ClipAugment (None: the defaults); ignored with val.
      seed: with the epoch and the index, decides every random choice.
      min_mask_pixels: an object needs this many pixels (at S x S) on the first frame.
      sequences: keep only these sequence names (None: all).
      val: deterministic clips for validation.
    """

    def __init__(self, roots: str | Path | Sequence[str | Path], image_size: int, clip_frames: int = 8,
                 max_objects: int = 3, augment: ClipAugment | None = None, seed: int = 0,
                 min_mask_pixels: int = 16, sequences: Sequence[str] | None = None, val: bool = False) -> None:
        super().__init__(image_size, clip_frames, max_objects, augment, seed, min_mask_pixels)
        roots = [roots] if isinstance(roots, (str, Path)) else list(roots)
        if not roots:
            raise VideoDataError("no video folder given")
        self.sequences: list[VideoSequence] = []
        for root in roots:
            self.sequences.extend(scan_video_folder(root, self.skip_counts))
        if sequences is not None:
            wanted = set(sequences)
            self.sequences = [s for s in self.sequences if s.name in wanted]
            if not self.sequences:
                raise VideoDataError(f"none of the sequences {sorted(wanted)} is in {[str(r) for r in roots]}")
        self.val = val

    def __len__(self) -> int:
        return len(self.sequences)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sequences]

    def _read(self, seq: VideoSequence, i: int) -> tuple[torch.Tensor, np.ndarray] | None:
        """Frame i as [3, H, W] float in [0, 1] and its id mask [H, W]; None (counted, and the
        frame leaves the sequence) when either file cannot be decoded."""
        from PIL import Image

        try:
            with Image.open(seq.frames[i]) as im:
                rgb = np.asarray(im.convert("RGB"))
            ids = read_label_mask(seq.masks[i], gray_ids=True)
        except (OSError, ValueError) as err:
            if isinstance(err, LabelMaskError) and not isinstance(err, UnreadableMaskError):
                raise VideoDataError(str(err)) from err  # a malformed mask: fix the data
            self.skip_counts["unreadable_frame"] += 1
            logger.warning("skipped (unreadable) frame %s of sequence %s: %s", seq.frames[i].name, seq.name, err)
            del seq.frames[i], seq.masks[i]
            return None
        if ids.shape != rgb.shape[:2]:
            raise VideoDataError(f"sequence {seq.name}: mask {seq.masks[i]} is {ids.shape[1]}x{ids.shape[0]}, "
                                 f"its frame is {rgb.shape[1]}x{rgb.shape[0]}")
        return torch.from_numpy(rgb.copy()).permute(2, 0, 1).float().div(255), ids

    def clip(self, index: int, epoch: int | None = None) -> Clip | None:
        epoch = self.epoch if epoch is None else epoch
        seq = self.sequences[index]
        rng = None if self.val else np.random.default_rng([self.seed, epoch, index])
        for _ in range(MAX_CLIP_ATTEMPTS):
            length = min(self.clip_frames, len(seq.frames))
            if length < 2:
                return None
            start = 0 if rng is None else int(rng.integers(0, len(seq.frames) - length + 1))
            read = [self._read(seq, i) for i in range(start + length - 1, start - 1, -1)][::-1]
            if any(r is None for r in read):
                continue  # a frame left the sequence: draw again
            ids = sorted(set().union(*(np.unique(m).tolist() for _, m in read)) - {0})
            frames = torch.stack([image for image, _ in read])  # [T, 3, H, W]
            id_maps = torch.from_numpy(np.stack([m for _, m in read]))  # [T, H, W]
            masks = id_maps[:, None] == torch.tensor(ids, dtype=id_maps.dtype).view(1, -1, 1, 1)
            # One resize for the whole clip: frames as 3T channels, masks as TK channels.
            frames, masks = resize_to_input(frames.flatten(0, 1), masks.flatten(0, 1), self.image_size)
            frames = frames.reshape(length, 3, self.image_size, self.image_size)
            masks = masks.reshape(length, len(ids), self.image_size, self.image_size)
            start_map = np.eye(3) if rng is None else random_affine(self.augment, rng)
            clip = self._finish(frames, masks, np.repeat(start_map[None], length, 0),
                                f"{seq.name}@{seq.frames[start].stem}", rng, colour=True)
            if clip is not None or rng is None:
                return clip
        return None


class CocoPseudoClips(ClipDataset):
    """COCO images as pseudo-clips (see the module docstring): one item per image.

    Args:
      annotations, images_dir: COCO instances file(s) and image folder(s) (see
        `segapp.training.data.load_coco_sources`).
      image_size, clip_frames, max_objects, augment, seed, min_mask_pixels: as VideoFolderClips.
      max_images: use the first N images of each source.
    """

    def __init__(self, annotations, images_dir, image_size: int, clip_frames: int = 8, max_objects: int = 3,
                 augment: ClipAugment | None = None, seed: int = 0, min_mask_pixels: int = 16,
                 max_images: int | None = None) -> None:
        super().__init__(image_size, clip_frames, max_objects, augment, seed, min_mask_pixels)
        self.coco = load_coco_sources(annotations, images_dir, max_images=max_images)
        self.entries = list(self.coco.images)
        self.skip_counts.update(s.reason for s in self.coco.skipped)
        if not self.entries:
            raise VideoDataError(f"no usable image with instance masks in {images_dir} ({annotations})")

    def __len__(self) -> int:
        return len(self.entries)

    def clip(self, index: int, epoch: int | None = None) -> Clip | None:
        from segapp.evaluation.coco import decode_segmentation, read_image

        epoch = self.epoch if epoch is None else epoch
        entry = self.entries[index]
        rng = np.random.default_rng([self.seed, epoch, index, 1])
        try:
            rgb = read_image(entry)
        except ValueError as err:
            self.skip_counts["unreadable_image"] += 1
            logger.warning("skipped (unreadable image): %s", err)
            return None
        masks = []
        for inst in entry.instances:
            try:
                mask = decode_segmentation(inst.segmentation, entry.height, entry.width)
            except (ValueError, TypeError, KeyError):
                continue
            if mask.any():
                masks.append(mask)
        if not masks:
            return None
        image = torch.from_numpy(rgb).permute(2, 0, 1).float().div(255)
        image, m = resize_to_input(image, torch.from_numpy(np.stack(masks)), self.image_size)
        t = self.clip_frames
        forward = drift(t, self.augment, rng, random_affine(self.augment, rng))
        return self._finish(image.expand(t, -1, -1, -1), m.expand(t, -1, -1, -1), forward,
                            f"coco:{entry.image_id}", rng, colour=True)


class ConcatClips(torch.utils.data.ConcatDataset):
    """Several clip sources as one (set_epoch and skip counts reach every source)."""

    def set_epoch(self, epoch: int) -> None:
        for d in self.datasets:
            d.set_epoch(epoch)

    @property
    def image_size(self) -> int:
        return self.datasets[0].image_size

    @property
    def skip_counts(self) -> Counter:
        total: Counter = Counter()
        for d in self.datasets:
            total.update(d.skip_counts)
        return total


def collate_clip(clips: list[Clip]) -> Clip:
    """DataLoader collate for batches of one clip (clips differ in length and objects)."""
    if len(clips) != 1:
        raise ValueError("clips are loaded one at a time")
    return clips[0]
