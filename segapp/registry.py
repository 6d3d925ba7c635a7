"""The official SAM 2 and SAM 2.1 checkpoints: where to get them and how to recognise them.

Each entry pairs a segapp config name (``sam2.1_hiera_t``) with the file Meta publishes
(``sam2.1_hiera_tiny.pt``), its download URL, and its size and SHA-256 so that a download
can be verified before it is used.

Where the numbers come from: the SHA-256 digests and byte sizes are the Git LFS pointers
(``oid sha256:...`` / ``size ...``) of the same files on the Hugging Face Hub, in Meta's own
repositories ``facebook/sam2.1-hiera-{tiny,small,base-plus,large}`` and
``facebook/sam2-hiera-{tiny,small,base-plus,large}``, cross-checked against independent
projects that verify the ``dl.fbaipublicfiles.com`` downloads with the same digests.
The URLs are those of ``checkpoints/download_ckpts.sh`` in facebookresearch/sam2.
A value that could not be confirmed would be stored as ``None`` (never guessed); the
downloader then says plainly that it cannot verify it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

# Environment variable: extra folders (os.pathsep-separated) searched for downloaded checkpoints.
CHECKPOINTS_ENV = "SEGAPP_CHECKPOINTS"
# Folder, relative to the working directory, where `segapp download` puts checkpoints.
DEFAULT_DIR = Path("checkpoints")
# The checkpoint to suggest when none is present: the smallest SAM 2.1 model.
DEFAULT_CHECKPOINT = "sam2.1_hiera_t"

_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything_2"
_SAM21_RELEASE = "092824"  # SAM 2.1, released 2024-09-28
_SAM20_RELEASE = "072824"  # SAM 2, released 2024-07-28

# Size suffix of the config name -> the word Meta uses in file and repository names.
_SIZES = {"t": "tiny", "s": "small", "b+": "base_plus", "l": "large"}


@dataclass(frozen=True)
class CheckpointInfo:
    """One official checkpoint.

    config: segapp config name to build the model with, e.g. ``"sam2.1_hiera_t"``.
    filename: the official file name, e.g. ``"sam2.1_hiera_tiny.pt"``.
    url: https download URL on Meta's file server.
    size: file size in bytes, or None when unknown.
    sha256: lowercase hex SHA-256 of the file, or None when unknown.
    hf_repo: the Hugging Face repository that holds the same file, e.g. ``"facebook/sam2.1-hiera-tiny"``.
    version: ``"2.1"`` or ``"2.0"``.
    """

    config: str
    filename: str
    url: str
    size: int | None
    sha256: str | None
    hf_repo: str
    version: str

    @property
    def size_mb(self) -> float | None:
        """Size in MB (10**6 bytes), or None when unknown."""
        return None if self.size is None else self.size / 1e6


def _entry(version: str, size_key: str, size: int, sha256: str) -> CheckpointInfo:
    word = _SIZES[size_key]
    prefix = "sam2.1" if version == "2.1" else "sam2"
    release = _SAM21_RELEASE if version == "2.1" else _SAM20_RELEASE
    filename = f"{prefix}_hiera_{word}.pt"
    return CheckpointInfo(
        config=f"{prefix}_hiera_{size_key}",
        filename=filename,
        url=f"{_BASE_URL}/{release}/{filename}",
        size=size,
        sha256=sha256,
        hf_repo=f"facebook/{prefix}-hiera-{word.replace('_', '-')}",
        version=version,
    )


# Order: SAM 2.1 before SAM 2, small to large within each (the order `segapp download --list` prints).
CHECKPOINTS: tuple[CheckpointInfo, ...] = (
    _entry("2.1", "t", 156008466, "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69"),
    _entry("2.1", "s", 184416285, "6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38"),
    _entry("2.1", "b+", 323606802, "a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5"),
    _entry("2.1", "l", 898083611, "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318"),
    _entry("2.0", "t", 155906050, "65b50056e05bcb13694174f51bb6da89c894b57b75ccdf0ba6352c597c5d1125"),
    _entry("2.0", "s", 184309650, "95949964d4e548409021d47b22712d5f1abf2564cc0c3c765ba599a24ac7dce3"),
    _entry("2.0", "b+", 323493298, "d0bb7f236400a49669ffdd1be617959a8b1d1065081789d7bbff88eded3a8071"),
    _entry("2.0", "l", 897952466, "7442e4e9b732a508f80e141e7c2913437a3610ee0c77381a66658c3a445df87b"),
)


class UnknownCheckpointError(KeyError):
    """A name that matches no official checkpoint; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would print the message inside quotes
        return str(self.args[0]) if self.args else "unknown checkpoint"


def _normalise(name: str) -> str:
    """Fold the spellings people use into one key: case, 'facebook/', '.pt', '-' vs '_'."""
    key = name.strip().lower()
    if key.startswith("facebook/"):
        key = key[len("facebook/"):]
    if key.endswith(".pt"):
        key = key[: -len(".pt")]
    return key.replace("-", "_")


def _aliases(info: CheckpointInfo) -> set[str]:
    names = {info.config, info.filename, info.hf_repo, info.hf_repo.split("/", 1)[1]}
    if info.version == "2.1":
        # Bare sizes ("tiny", "t", "base-plus", "b+") mean the current release, SAM 2.1.
        size_key = info.config.rsplit("_", 1)[1]
        names |= {size_key, _SIZES[size_key], _SIZES[size_key].replace("_", "")}
    return {_normalise(n) for n in names}


def _index() -> dict[str, CheckpointInfo]:
    # Built per call from CHECKPOINTS (eight entries), so the table stays the single source of truth.
    index: dict[str, CheckpointInfo] = {}
    for info in CHECKPOINTS:
        for alias in _aliases(info):
            index.setdefault(alias, info)
    return index


def all_checkpoints() -> list[CheckpointInfo]:
    """Every official checkpoint, SAM 2.1 first, small to large."""
    return list(CHECKPOINTS)


def names() -> list[str]:
    """The config names of all official checkpoints, in registry order."""
    return [info.config for info in CHECKPOINTS]


def get(name: str) -> CheckpointInfo:
    """Look up a checkpoint by config name or alias.

    Accepted spellings include the config name (``sam2.1_hiera_t``), the file name
    (``sam2.1_hiera_tiny.pt``), the Hugging Face id (``facebook/sam2.1-hiera-tiny`` or
    ``sam2.1-hiera-tiny``) and, for SAM 2.1, the bare size (``tiny``, ``t``, ``base-plus``, ``b+``).
    Raises UnknownCheckpointError (a KeyError) naming the valid config names.
    """
    info = _index().get(_normalise(name))
    if info is None:
        raise UnknownCheckpointError(
            f"unknown checkpoint {name!r}; valid names: {', '.join(names())} "
            "(aliases such as 'tiny', 'sam2.1-hiera-tiny' or 'facebook/sam2.1-hiera-tiny' also work)"
        )
    return info


def by_filename(filename: str) -> CheckpointInfo | None:
    """The checkpoint whose official file name is `filename`, or None."""
    for info in CHECKPOINTS:
        if info.filename == filename:
            return info
    return None


def default_search_dirs() -> list[Path]:
    """Folders searched for downloaded checkpoints, in order.

    ``./checkpoints`` (relative to the working directory), then each folder listed in the
    environment variable SEGAPP_CHECKPOINTS (os.pathsep-separated) when it is set.
    """
    dirs = [DEFAULT_DIR]
    extra = os.environ.get(CHECKPOINTS_ENV, "")
    dirs += [Path(part).expanduser() for part in extra.split(os.pathsep) if part.strip()]
    return dirs


def find_local(
    name: str, dirs: Iterable[str | os.PathLike] | None = None, *, check_size: bool = True
) -> Path | None:
    """Path of a downloaded copy of checkpoint `name`, or None if there is none.

    dirs: folders to look in (default: `default_search_dirs()`); the first match wins.
    check_size: skip a file whose size differs from the registry's (a truncated or foreign
        file); this costs one stat, the SHA-256 is not recomputed here.
    Partial downloads (``*.part``) are never returned.
    """
    info = get(name)
    search: Sequence[Path] = [Path(d) for d in dirs] if dirs is not None else default_search_dirs()
    for folder in search:
        candidate = folder / info.filename
        if not candidate.is_file():
            continue
        if check_size and info.size is not None and candidate.stat().st_size != info.size:
            continue
        return candidate
    return None
