"""Finding the inputs of a batch run and naming their outputs.

Inputs are files or folders (searched recursively). Every file found becomes an `Input`:
an image, a video, or an unsupported file (reported as a failure, never silently dropped).
Outputs mirror the input tree: each input's path relative to the common root of all
inputs is kept under the output folder. Where two inputs' outputs would still meet (a.jpg and
a.png; a video clip.mp4, whose frames go to clip/, beside a folder clip/ of images), the
names are resolved before any work (see `output_stems`); a clash that remains is an error.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from segapp.formats.media import kind_of


# COCO image ids are derived from the relative path; this keeps them positive int32.
_ID_MODULUS = 2**31 - 1
# Per-input state files are named "<file name>-<digest>.json": the name is cut to stay under
# the usual 255-byte limit on file names.
KEY_NAME_CHARS = 48
# Files the run itself writes at the top of the output folder (outputs/RunState).
RESERVED_OUTPUTS = ("manifest.jsonl", "coco_results.json", "coco_images.json", ".segapp")
# A folder holding this file is the output folder of a `segapp segment` run.
RUN_MARKER = (".segapp", "run.json")

logger = logging.getLogger(__name__)


class InputError(ValueError):
    """Inputs that cannot be segmented as given (output folder inside an input, clashing
    output names); the message names the paths."""


@dataclass(frozen=True)
class Input:
    """One input file.

    path: the file, as found (absolute; symlinks not resolved).
    rel: its path relative to the run's root, POSIX style (the key in prompts files,
      the manifest and the COCO output). A name that is not valid UTF-8 keeps its
      undecodable bytes as lone surrogates (Python's surrogateescape), as `os.listdir` gives it.
    kind: "image", "video" or "unsupported".
    stem: output name without extension, relative to the output folder (mirrors `rel`;
      the extension is kept where outputs would otherwise clash, see `output_stems`).
    target: the real file when a symlink below the run's root leads to it, else None.
    """

    path: Path
    rel: str
    kind: str
    stem: str
    target: str | None = None

    @property
    def key(self) -> str:
        """A file-name-safe unique key (for per-input state files): the file name, made
        valid UTF-8 and cut to KEY_NAME_CHARS, and a digest of the relative path."""
        digest = hashlib.sha1(_utf8(self.rel)).hexdigest()[:16]
        name = display(Path(self.rel).name)[:KEY_NAME_CHARS]
        return f"{name}-{digest}"


def _utf8(text: str) -> bytes:
    """`text` as bytes; lone surrogates (undecodable bytes of a file name) become those bytes."""
    return text.encode("utf-8", "surrogateescape")


def display(rel: str) -> str:
    """A printable form of a relative path: undecodable bytes of a name shown as \\xNN."""
    return _utf8(rel).decode("utf-8", "backslashreplace")


def image_id(rel: str, frame: int | None = None) -> int:
    """Stable COCO image id of an image (or of one frame of a video), from its relative path.

    Stable across runs, resumes and engines, whatever order the inputs are processed in.
    """
    text = rel if frame is None else f"{rel}#{frame}"
    return int.from_bytes(hashlib.sha1(_utf8(text)).digest()[:8], "big") % _ID_MODULUS + 1


def is_output_folder(folder: Path) -> bool:
    """Whether `folder` is the output folder of a `segapp segment` run."""
    return folder.joinpath(*RUN_MARKER).is_file()


def check_output_folder(paths: Sequence[str | os.PathLike], out: str | os.PathLike) -> None:
    """Refuse an output folder that could overwrite or re-read inputs: `out` may not be an
    input folder or lie inside one, and no input may lie inside `out` (real paths compared,
    so symlinks and `..` do not hide it). Raises InputError naming both paths."""
    out_real = Path(out).resolve()
    for raw in paths:
        path = Path(raw)
        real = path.resolve()
        if path.is_dir() and (out_real == real or real in out_real.parents):
            where = "is" if out_real == real else "is inside"
            raise InputError(f"the output folder {out} {where} the input folder {raw}: its outputs would "
                             f"overwrite or mix with the inputs; choose an --out outside every input")
        if out_real in real.parents or (out_real == real and not path.is_dir()):
            raise InputError(f"the input {raw} is inside the output folder {out}; choose an --out "
                             f"that holds no input")


def _walk(folder: Path, excluded: set[Path], above: frozenset[Path] = frozenset()) -> Iterator[Path]:
    """Files under `folder`, sorted by name, as found (not resolved). Symlinked files and
    folders are followed; a folder whose real path is one of the folders above it (a symlink
    loop) is left out with a warning, so the walk always ends. Hidden files and folders, the
    `excluded` real paths and folders holding an earlier run's outputs are left out."""
    real = folder.resolve()
    if real in above:
        logger.warning("leaving out %s: a symlink loop (it leads back to %s)", display(str(folder)), real)
        return
    above = above | {real}
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as err:
        logger.warning("leaving out folder %s: cannot list it (%s)", display(str(folder)), err.strerror or err)
        return
    for entry in entries:
        if entry.name.startswith("."):  # .git, our own .segapp state
            continue
        path = folder / entry.name
        try:
            is_dir = entry.is_dir()  # follows symlinks
        except OSError:
            is_dir = False
        if not is_dir:
            yield path
        elif path.resolve() in excluded:
            continue
        elif is_output_folder(path):
            # An earlier run's outputs (instance-id PNGs) are never segmented as images.
            logger.warning("leaving out %s: it holds the outputs of a `segapp segment` run", display(str(path)))
        else:
            yield from _walk(path, excluded, above)


def discover(paths: Sequence[str | os.PathLike], exclude: Sequence[str | os.PathLike] = ()) -> list[Input]:
    """All input files under `paths`, sorted by relative path, with their output names.

    Symlinks are followed (with a loop guard, see `_walk`); the relative path is the one
    found, and `Input.target` names the real file when a symlink below the root leads to it.
    exclude: files or folders to leave out (the output folder, the prompts file). Folders
    holding an earlier run's outputs (`.segapp/run.json`) are left out with a warning.
    Raises FileNotFoundError naming a path that does not exist, InputError when an input
    folder is a run's output folder or two inputs' outputs clash.
    """
    excluded = {Path(p).resolve() for p in exclude}
    files: list[Path] = []
    roots: list[Path] = []
    for raw in paths:
        path = Path(os.path.abspath(raw))
        if not path.exists():
            raise FileNotFoundError(f"input not found: {raw}")
        if path.is_dir():
            if is_output_folder(path):
                raise InputError(f"{raw} holds the outputs of a `segapp segment` run (instance-id maps, "
                                 f"not images); segment the original inputs instead")
            roots.append(path)
            files += _walk(path, excluded)
        else:
            roots.append(path.parent)
            files.append(path)
    files = [f for f in dict.fromkeys(files) if f.resolve() not in excluded]
    if not files:
        return []
    root = Path(os.path.commonpath([str(r) for r in roots]))
    root_real = root.resolve()
    items = []
    for f in files:
        rel = f.relative_to(root).as_posix()
        real = f.resolve()
        items.append((f, rel, None if real == root_real / rel else str(real)))
    items.sort(key=lambda it: it[1])
    rels = [rel for _, rel, _ in items]
    kinds = [kind_of(f) for f, _, _ in items]
    stems = output_stems(rels, kinds)
    return [Input(path=f, rel=rel, kind=kind, stem=stem, target=target)
            for (f, rel, target), kind, stem in zip(items, kinds, stems)]


# ---------------------------------------------------------------------------- output names
def output_stems(rels: Sequence[str], kinds: Sequence[str]) -> list[str]:
    """The output stem of each input (relative path without extension), resolving clashes.

    The rules (docs/segment.md, "Output names"):
    1. inputs sharing a stem in one folder (a.jpg, a.png) keep their extension (a.jpg.png, a.png.png);
    2. a video whose frame folder would hold (or be) another input's output keeps its extension:
       clip.mp4 beside a folder clip/ of images writes clip.mp4/000000.png, clip.mp4.overlay.mp4.
    Raises InputError naming both inputs when a clash remains.
    """
    bare = [_strip(rel) for rel in rels]
    counts: dict[str, int] = {}
    for stem in bare:
        counts[stem] = counts.get(stem, 0) + 1
    stems = [rel if counts[stem] > 1 else stem for rel, stem in zip(rels, bare)]
    for clash in _clashes(stems, kinds):
        if clash.video is not None:
            stems[clash.video] = rels[clash.video]
    remaining = _clashes(stems, kinds)
    if remaining:
        c = remaining[0]
        owner = lambda i: "segapp's own files" if i < 0 else rels[i]  # noqa: E731
        more = f" (and {len(remaining) - 1} more)" if len(remaining) > 1 else ""
        raise InputError(f"the outputs of {owner(c.a)} and {owner(c.b)} would both be written to "
                         f"{c.output}{more}; rename one of them")
    return stems


def _strip(rel: str) -> str:
    return Path(rel).with_suffix("").as_posix()


@dataclass(frozen=True)
class _Clash:
    output: str  # the path both would write
    a: int  # input indices (-1: the run's own files)
    b: int
    video: int | None  # the video whose frame folder is involved, if any


def _clashes(stems: Sequence[str], kinds: Sequence[str]) -> list[_Clash]:
    """Output paths that two inputs would both write, that one writes as a file where another
    needs a folder, or that lie in a video's frame folder `<stem>/` (which holds its frames only)."""
    files: dict[str, int] = {name: -1 for name in RESERVED_OUTPUTS}
    frame_dirs: dict[str, int] = {}
    clashes: list[_Clash] = []

    def claim(path: str, owner: int, video: int | None = None) -> None:
        if path in files and files[path] != owner:
            clashes.append(_Clash(path, files[path], owner, video))
        else:
            files[path] = owner

    for i, (stem, kind) in enumerate(zip(stems, kinds)):
        if kind == "image":
            claim(f"{stem}.png", i)
            claim(f"{stem}.overlay.jpg", i)
        elif kind == "video":
            claim(f"{stem}.overlay.mp4", i)
            if stem in frame_dirs:
                clashes.append(_Clash(f"{stem}/", frame_dirs[stem], i, i))
            frame_dirs[stem] = i
    for path, owner in files.items():  # another input's output inside a video's frame folder
        for parent in Path(path).parents[:-1]:
            video = frame_dirs.get(parent.as_posix())
            if video is not None and video != owner:
                clashes.append(_Clash(path, video, owner, video))
    folders: dict[str, tuple[int, int | None]] = {}  # folder -> (an input writing into it, video)
    for path, owner in files.items():
        for parent in Path(path).parents[:-1]:
            folders.setdefault(parent.as_posix(), (owner, None))
    for stem, owner in frame_dirs.items():
        folders.setdefault(stem, (owner, owner))
        for parent in Path(stem).parents[:-1]:
            folders.setdefault(parent.as_posix(), (owner, None))
    for folder, (owner, video) in folders.items():  # a file where a folder is needed
        if folder in files and files[folder] != owner:
            clashes.append(_Clash(folder, files[folder], owner, video))
    return clashes
