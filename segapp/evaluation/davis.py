"""DAVIS-layout folders as datasets of sequences to evaluate (`segapp eval video`).

    root/JPEGImages/<sequence>/00000.jpg ...    the frames
    root/Annotations/<sequence>/00000.png ...   one mask per frame, same names (stems)

`load_davis` checks every sequence before anything is evaluated and skips, with a reason
naming the file, those that cannot be (segapp.evaluation.video evaluates the rest). Masks are
read under the benchmark rule of `segapp.formats.label_masks`.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence as SequenceOf

from segapp.formats.label_masks import LabelMaskError, object_ids, read_label_mask
from segapp.formats.media import FRAME_SUFFIXES
from segapp.video.frames import natural_key

logger = logging.getLogger(__name__)

FRAMES_DIR, MASKS_DIR = "JPEGImages", "Annotations"

# Why a sequence was not evaluated. All but `empty_first_mask` and `too_short` are bad input.
SKIP_NO_ANNOTATIONS = "missing_annotations"
SKIP_NO_FRAMES = "no_frames"
SKIP_FRAME_MASK_MISMATCH = "frames_and_masks_differ"
SKIP_SIZE = "size_mismatch"
SKIP_UNREADABLE_FRAME = "unreadable_frame"
SKIP_BAD_MASK = "bad_mask"
SKIP_EMPTY_FIRST = "empty_first_mask"
SKIP_TOO_SHORT = "too_short"
PROTOCOL_SKIPS = (SKIP_EMPTY_FIRST, SKIP_TOO_SHORT)


class VideoDatasetError(ValueError):
    """The dataset folder cannot be used at all (no JPEGImages, unknown sequence names)."""


@dataclass(frozen=True)
class Sequence:
    """One sequence to evaluate: frames and masks in the same (natural) order."""

    name: str
    frames_dir: Path
    frames: tuple[Path, ...]
    masks: tuple[Path, ...]
    height: int
    width: int
    object_ids: tuple[int, ...]
    late_objects: tuple[int, ...] = ()  # ids that first appear after frame 0 (not evaluated)


@dataclass(frozen=True)
class SkippedSequence:
    sequence: str
    reason: str
    detail: str


@dataclass
class VideoDataset:
    root: Path
    sequences: list[Sequence]
    skipped: list[SkippedSequence] = field(default_factory=list)


def _files(folder: Path, suffixes: SequenceOf[str]) -> list[Path]:
    names = [n for n in os.listdir(folder) if n.lower().endswith(tuple(suffixes))]
    return [folder / n for n in sorted(names, key=natural_key)]


def read_sequence_list(spec: str | None) -> list[str] | None:
    """`--sequences`: a comma-separated list, or a file with one name per line (blank lines and
    `#` comments ignored); None for all sequences."""
    if spec is None:
        return None
    path = Path(spec)
    if path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()
        names = [ln.split("#", 1)[0].strip() for ln in lines]
    else:
        names = [n.strip() for n in spec.split(",")]
    names = [n for n in names if n]
    if not names:
        raise VideoDatasetError(f"--sequences {spec!r} names no sequence")
    return list(dict.fromkeys(names))


def load_davis(root: str | Path, sequences: SequenceOf[str] | None = None) -> VideoDataset:
    """Find and check the sequences of a DAVIS-layout folder.

    Every sequence is checked before anything is evaluated: frames and masks must pair up by
    name, every frame's and mask's header must be readable and of one size, and every mask
    must be a palette or 0/255 mask. A sequence failing a check is skipped with a reason naming
    the file. Raises VideoDatasetError when `root` has no JPEGImages folder, no sequence, or
    `sequences` names one it does not have.
    """
    root = Path(root)
    frames_root, masks_root = root / FRAMES_DIR, root / MASKS_DIR
    if not frames_root.is_dir():
        raise VideoDatasetError(f"{root} is not a DAVIS-layout folder: it has no {FRAMES_DIR}/ "
                                f"(expected {FRAMES_DIR}/<sequence>/*.jpg and "
                                f"{MASKS_DIR}/<sequence>/*.png)")
    available = sorted((p.name for p in frames_root.iterdir() if p.is_dir()), key=natural_key)
    if not available:
        raise VideoDatasetError(f"{frames_root} holds no sequence folder")
    if sequences is None:
        names = available
    else:
        unknown = [s for s in sequences if s not in available]
        if unknown:
            shown = ", ".join(available[:10]) + (", ..." if len(available) > 10 else "")
            raise VideoDatasetError(f"no sequence {', '.join(unknown)} in {frames_root} "
                                    f"(it has: {shown})")
        names = list(sequences)
    dataset = VideoDataset(root, [], [])
    for name in names:
        checked = _check_sequence(name, frames_root / name, masks_root / name)
        if isinstance(checked, SkippedSequence):
            dataset.skipped.append(checked)
        else:
            dataset.sequences.append(checked)
    return dataset


def _check_sequence(name: str, frames_dir: Path, masks_dir: Path) -> Sequence | SkippedSequence:
    from PIL import Image

    def skip(reason: str, detail: str) -> SkippedSequence:
        return SkippedSequence(name, reason, detail)

    frames = _files(frames_dir, FRAME_SUFFIXES)
    if not frames:
        return skip(SKIP_NO_FRAMES, f"no JPEG or PNG frames in {frames_dir}")
    if not masks_dir.is_dir():
        return skip(SKIP_NO_ANNOTATIONS, f"no annotation folder {masks_dir}")
    masks = _files(masks_dir, (".png",))
    frame_stems, mask_stems = [p.stem for p in frames], [p.stem for p in masks]
    if frame_stems != mask_stems:
        no_mask = [p.name for p in frames if p.stem not in set(mask_stems)]
        no_frame = [p.name for p in masks if p.stem not in set(frame_stems)]
        parts = [f"{len(frames)} frames in {frames_dir}, {len(masks)} masks in {masks_dir}"]
        if no_mask:
            parts.append(f"frames without a mask: {', '.join(no_mask[:5])}"
                         + (", ..." if len(no_mask) > 5 else ""))
        if no_frame:
            parts.append(f"masks without a frame: {', '.join(no_frame[:5])}"
                         + (", ..." if len(no_frame) > 5 else ""))
        return skip(SKIP_FRAME_MASK_MISMATCH, "; ".join(parts))
    try:
        first = read_label_mask(masks[0])
    except LabelMaskError as err:
        return skip(SKIP_BAD_MASK, str(err))
    height, width = first.shape
    for path in frames:
        try:
            with Image.open(path) as image:
                size = image.size
        except (OSError, SyntaxError, ValueError) as err:
            return skip(SKIP_UNREADABLE_FRAME, f"cannot read frame {path}: {err}")
        if size != (width, height):
            return skip(SKIP_SIZE, f"frame {path} is {size[0]}x{size[1]}, its masks are "
                                   f"{width}x{height} ({masks[0].name})")
    later: set[int] = set()
    for path in masks[1:]:
        try:
            ids = read_label_mask(path)
        except LabelMaskError as err:
            return skip(SKIP_BAD_MASK, str(err))
        if ids.shape != (height, width):
            return skip(SKIP_SIZE, f"mask {path} is {ids.shape[1]}x{ids.shape[0]}, the first "
                                   f"mask {masks[0].name} is {width}x{height}")
        later.update(object_ids(ids))
    objects = object_ids(first)
    if not objects:
        return skip(SKIP_EMPTY_FIRST, f"the first mask {masks[0]} has no object: nothing to track")
    if len(frames) < 3:
        return skip(SKIP_TOO_SHORT, f"{len(frames)} frames: the first and last are not measured, "
                                    "so nothing is left")
    late = tuple(sorted(later - set(objects)))
    if late:
        logger.warning("%s: object id(s) %s appear after the first frame and are not evaluated",
                       name, ", ".join(map(str, late)))
    return Sequence(name, frames_dir, tuple(frames), tuple(masks), height, width, tuple(objects),
                    late)
