"""segapp's own small model, shipped inside the package: `segapp_small`.

The weights live at `segapp/weights/segapp_small.safetensors` (config `configs/segapp_small.yaml`,
installed as `segapp.configs`), with their model card `segapp/weights/MODEL_CARD.md`. They were
written by `segapp train`, so the file's metadata says how they were made (config, image size,
recipe, epoch); this module reads it to describe the model in one line.

    from segapp import bundled
    bundled.checkpoint()     # Path of the weights; BundledModelMissing if this install lacks them
    bundled.description()    # "segapp_small (bundled, trained on 255 COCO images; ...)"

The image path was trained from scratch by `segapp train` and, since version 2.1, the video
memory by `segapp train-video` (the model card says how; its tracking is weak). Which parts of
a model carry trained weights is recorded beside the model by `segapp.build_model`
(`segapp.model_info(model).trained_parts`, from the checkpoint's metadata); `require_video` is
the one check the video paths make.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Mapping

NAME = "segapp_small"
FILENAME = f"{NAME}.safetensors"
CARD = "MODEL_CARD.md"
# The official checkpoint to suggest for full quality and for video.
FULL_QUALITY = "sam2.1_hiera_t"

# Parts of a SAM2Model that `segapp train` trains (the image path); the rest is video memory.
IMAGE_PATH_PARTS = ("image_encoder", "prompt_encoder", "mask_decoder", "no_mem_embed")
# Metadata key (comma-separated part names) that says which parts carry trained weights.
TRAINED_PARTS_KEY = "trained_parts"
# "Segment everything" filters for the bundled model, used by `segapp segment` and the demo when
# the user sets none: its predicted IoUs and stability run lower than the official models', and
# at the official 0.8 / 0.95 it keeps few or no masks (measured: docs/benchmarks/bundled_model.md).
AMG_FILTERS = {"pred_iou_thresh": 0.15, "stability_score_thresh": 0.8}
# The official SAM 2 filters, for every other model.
OFFICIAL_AMG_FILTERS = {"pred_iou_thresh": 0.8, "stability_score_thresh": 0.95}


def amg_filters(is_bundled_model: bool) -> dict[str, float]:
    """The default "segment everything" filters for the bundled model or any other."""
    return dict(AMG_FILTERS if is_bundled_model else OFFICIAL_AMG_FILTERS)


class BundledModelMissing(FileNotFoundError):
    """This install of segapp lacks the bundled weights file."""


class ImageOnlyModelError(RuntimeError):
    """A model whose video memory was never trained was asked to track video."""


def weights_dir() -> Path:
    return Path(__file__).resolve().parent / "weights"


def path() -> Path:
    """Where the bundled weights are (whether or not the file is there)."""
    return weights_dir() / FILENAME


def card_path() -> Path:
    return weights_dir() / CARD


def available() -> bool:
    return path().is_file()


def checkpoint() -> Path:
    """The bundled weights file; BundledModelMissing (with what to do) if it is not installed."""
    p = path()
    if not p.is_file():
        raise BundledModelMissing(
            f"the bundled model {NAME} is missing from this install of segapp (expected {p}); "
            f"reinstall segapp, or download an official checkpoint: segapp download {FULL_QUALITY}")
    return p


def read_metadata(file: str | Path) -> dict[str, str]:
    """The string metadata of a safetensors file ({} for other files or none)."""
    file = Path(file)
    if file.suffix != ".safetensors" or not file.is_file():
        return {}
    from safetensors import safe_open

    try:
        with safe_open(str(file), "pt") as f:
            return dict(f.metadata() or {})
    except Exception:  # noqa: BLE001 - unreadable files are reported when loaded, not here
        return {}


@lru_cache(maxsize=4)
def _metadata_cached(file: str, mtime: float) -> tuple[tuple[str, str], ...]:
    return tuple(read_metadata(file).items())


def metadata() -> dict[str, str]:
    """The bundled file's metadata (raises BundledModelMissing without the file)."""
    p = checkpoint()
    return dict(_metadata_cached(str(p), p.stat().st_mtime))


def trained_parts(meta: Mapping[str, str]) -> tuple[str, ...] | None:
    """The model parts a checkpoint's weights were trained for, from its metadata; None when
    unknown (official checkpoints, files without metadata): then every part is taken as trained.

    An explicit `trained_parts` entry wins. Otherwise a file written by `segapp train` tells it
    by its recipe: trained from scratch (no `init`), only the image path that was not frozen
    holds trained weights; fine-tuned from a checkpoint, the rest comes from that checkpoint.
    """
    if meta.get(TRAINED_PARTS_KEY):
        return tuple(p.strip() for p in meta[TRAINED_PARTS_KEY].split(",") if p.strip())
    try:
        recipe = json.loads(meta.get("recipe", ""))
    except ValueError:
        return None
    if not isinstance(recipe, dict) or "init" not in recipe or recipe.get("init"):
        return None
    frozen = set(recipe.get("freeze") or ())
    return tuple(p for p in IMAGE_PATH_PARTS if p not in frozen)


def is_bundled(file: str | Path | None) -> bool:
    if file is None:
        return False
    try:
        return Path(file).resolve() == path().resolve()
    except OSError:
        return False


def _train_image_count(meta: Mapping[str, str]) -> int | None:
    """Training images: a `train_image_count` entry, or the recipe's (written by `segapp train`)."""
    try:
        count = meta.get("train_image_count")
        if count is None:
            recipe = json.loads(meta.get("recipe", "") or "{}")
            count = recipe.get("train_image_count") if isinstance(recipe, dict) else None
        return int(count) if count is not None else None
    except (ValueError, TypeError):
        return None


def description(meta: Mapping[str, str] | None = None, hint: bool = True) -> str:
    """One line for people: which model this is, that it is small, and (hint) how to get full
    quality."""
    meta = metadata() if meta is None else meta
    if meta.get("description"):
        trained = meta["description"]
    else:
        count = _train_image_count(meta)
        trained = f"trained on {count} COCO images" if count else "trained on a few hundred COCO images"
        if meta.get("train_video_sequences"):
            trained += f" and {meta['train_video_sequences']} DAVIS videos"
    tail = f": for full quality run `segapp download {FULL_QUALITY}`" if hint else ""
    parts = trained_parts(meta)
    scope = "a small model" if parts is None or "memory_attention" in parts else "a small model, images only"
    return f"{NAME} (bundled, {trained}; {scope}{tail})"


def image_only_message(label: str) -> str:
    return (f"{label} is trained for images only; video tracking needs an official checkpoint: "
            f"segapp download {FULL_QUALITY}")


def require_video(model) -> None:
    """Raise ImageOnlyModelError unless `model`'s video memory carries trained weights."""
    from segapp.build_info import model_info

    info = model_info(model)
    if info.trained_parts is None or "memory_attention" in info.trained_parts:
        return
    raise ImageOnlyModelError(image_only_message(info.label))


def add_metadata(file: str | Path, entries: Mapping[str, str]) -> Path:
    """Rewrite a safetensors file with more metadata entries (same tensors), atomically.

    For the maintainer who ships new weights, e.g. ``add_metadata(path(), {"train_image_count":
    "255"})``, or ``{"trained_parts": "image_encoder,prompt_encoder,mask_decoder,no_mem_embed"}``.
    """
    from safetensors.torch import load_file, save_file

    file = Path(file)
    meta = {**read_metadata(file), **{str(k): str(v) for k, v in entries.items()}}
    tmp = file.with_name(file.name + ".tmp")
    save_file(load_file(str(file)), str(tmp), metadata=meta)
    tmp.replace(file)
    return file
