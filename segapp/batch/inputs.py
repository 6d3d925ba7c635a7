"""Finding the inputs of a batch run and naming their outputs.

Inputs are files or folders (searched recursively). Every file found becomes an `Input`:
an image, a video, or an unsupported file (reported as a failure, never silently dropped).
Outputs mirror the input tree: each input's path relative to the common root of all
inputs is kept under the output folder, so two inputs can never share an output name.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTS = (".mp4", ".mov", ".avi", ".mkv")

# COCO image ids are derived from the relative path; this keeps them positive int32.
_ID_MODULUS = 2**31 - 1


@dataclass(frozen=True)
class Input:
    """One input file.

    path: the file.
    rel: its path relative to the run's root, POSIX style (the key in prompts files,
      the manifest and the COCO output).
    kind: "image", "video" or "unsupported".
    stem: output name without extension, relative to the output folder (mirrors `rel`;
      the extension is kept only where two inputs in one folder share a stem).
    """

    path: Path
    rel: str
    kind: str
    stem: str

    @property
    def key(self) -> str:
        """A file-name-safe unique key (for per-input state files)."""
        digest = hashlib.sha1(self.rel.encode("utf-8")).hexdigest()[:16]
        return f"{Path(self.rel).name}-{digest}"


def kind_of(path: Path) -> str:
    ext = path.suffix.lower()
    if ext in IMAGE_EXTS:
        return "image"
    if ext in VIDEO_EXTS:
        return "video"
    return "unsupported"


def image_id(rel: str, frame: int | None = None) -> int:
    """Stable COCO image id of an image (or of one frame of a video), from its relative path.

    Stable across runs, resumes and engines, whatever order the inputs are processed in.
    """
    text = rel if frame is None else f"{rel}#{frame}"
    return int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest()[:8], "big") % _ID_MODULUS + 1


def _walk(folder: Path, exclude: Sequence[Path]) -> Iterable[Path]:
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        here = Path(dirpath)
        # Hidden folders (.git, our own .segapp state) and excluded ones are not inputs.
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and (here / d).resolve() not in exclude)
        for name in sorted(filenames):
            if not name.startswith("."):
                yield here / name


def discover(paths: Sequence[str | os.PathLike], exclude: Sequence[str | os.PathLike] = ()) -> list[Input]:
    """All input files under `paths`, sorted by relative path.

    exclude: files or folders to leave out (the output folder, the prompts file).
    Raises FileNotFoundError naming a path that does not exist.
    """
    excluded = [Path(p).resolve() for p in exclude]
    files: list[Path] = []
    roots: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise FileNotFoundError(f"input not found: {path}")
        resolved = path.resolve()
        if path.is_dir():
            roots.append(resolved)
            files += [f.resolve() for f in _walk(path, excluded)]
        else:
            roots.append(resolved.parent)
            files.append(resolved)
    files = [f for f in dict.fromkeys(files) if f not in excluded]
    if not files:
        return []
    root = Path(os.path.commonpath([str(r) for r in roots]))
    items = [(f, f.relative_to(root).as_posix()) for f in files]
    items.sort(key=lambda it: it[1])
    # Stems shared within one folder (a.jpg and a.png) keep their extension in the output name.
    counts: dict[str, int] = {}
    for _, rel in items:
        stem = str(Path(rel).with_suffix(""))
        counts[stem] = counts.get(stem, 0) + 1
    out = []
    for f, rel in items:
        stem = str(Path(rel).with_suffix(""))
        out.append(Input(path=f, rel=rel, kind=kind_of(f),
                         stem=rel if counts[stem] > 1 else Path(stem).as_posix()))
    return out
