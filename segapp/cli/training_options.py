"""The options `segapp train`, `train-video` and `pretrain` share, and their checks.

Each command lists its options in its own order (that is the order `--help` shows) and
takes the shared ones from here by flag: `add_options(group, recipe, "--lr", "--seed")`, with
the command's own help text where it says more (`helps={"--epochs": "..."}`). An option of
the recipe takes its default from the command's config dataclass through `RecipeDefault`:
shown by `--help`, and left to the dataclass when the user does not set it.
"""
from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from typing import Callable, Sequence

from segapp.cli import CLIError

DEFAULT_CONFIG = "segapp_small"

# The shared options: flag -> argparse keywords. `recipe: True` takes the default from the
# config dataclass (the field named like the flag, underscores for dashes).
SHARED_OPTIONS: dict[str, dict] = {
    "--epochs": dict(type=int, recipe=True, help="total epochs (default: %(default)s)"),
    "--batch-size": dict(type=int, recipe=True, help="images per step (default: %(default)s)"),
    "--lr": dict(type=float, recipe=True, help="peak learning rate (default: %(default)s)"),
    "--weight-decay": dict(type=float, recipe=True, help="AdamW weight decay (default: %(default)s)"),
    "--warmup-steps": dict(type=int, recipe=True,
                           help="linear warm-up steps before the cosine decay (default: %(default)s)"),
    "--grad-clip": dict(type=float, recipe=True, help="max gradient norm, 0 for none (default: %(default)s)"),
    "--correction-rounds": dict(type=int, recipe=True),
    "--prob-box": dict(type=float, recipe=True),
    "--loss-weights": dict(metavar="F,D,I,O", help="weights of the focal, dice, IoU and object-score losses "
                                                   "(default: SAM 2's 20,1,1,1)"),
    "--max-steps-per-epoch": dict(type=int, metavar="N", help="cut epochs short (quick runs)"),
    "--seed": dict(type=int, recipe=True, help="seed of every random choice (default: %(default)s)"),
    "--log-every": dict(type=int, recipe=True),
    "--workers": dict(type=int, recipe=True, metavar="N"),
    "--max-images": dict(type=int, metavar="N"),
    "--config": dict(default=DEFAULT_CONFIG, metavar="NAME"),
    "--init": dict(type=Path, metavar="CHECKPOINT"),
    "--image-size": dict(type=int, metavar="S"),
    "--freeze": dict(action="append", default=[], metavar="PART"),
    "--device": dict(help="cpu, cuda, ... (default: the best available)"),
    "--amp": dict(recipe=True, metavar="MODE", help="auto (bf16 autocast on CUDA), bf16 or off (default: %(default)s)"),
    "--out": dict(type=Path, metavar="DIR"),
    "--resume": dict(action="store_true", help="continue the run saved in --out/last.pt"),
}


class RecipeDefault:
    """An option's default: the value of the config dataclass `config_class` ("module:Class"),
    looked up only when --help shows it (so that building the parser does not import torch),
    and left to the dataclass when not overridden."""

    def __init__(self, config_class: str, name: str) -> None:
        self.config_class = config_class
        self.name = name

    def __str__(self) -> str:
        module, cls = self.config_class.split(":")
        value = getattr(getattr(importlib.import_module(module), cls)(), self.name)
        return f"{value:g}" if isinstance(value, float) else str(value)


def recipe_defaults(config_class: str) -> Callable[[str], RecipeDefault]:
    """name -> RecipeDefault of that field of `config_class` ("module:Class")."""
    return lambda name: RecipeDefault(config_class, name)


def add_options(group, recipe: Callable[[str], RecipeDefault], *flags: str,
                helps: dict[str, str] | None = None, **keywords) -> None:
    """Add the shared options `flags` to `group`, in that order. `helps`: the command's own help
    text of some of them; `keywords`: more argparse keywords for a single flag (e.g. default)."""
    helps = helps or {}
    if keywords and len(flags) != 1:
        raise ValueError(f"argparse keywords {sorted(keywords)} need exactly one flag, got {flags}")
    for flag in flags:
        spec = {**SHARED_OPTIONS[flag], **keywords}
        if spec.pop("recipe", False) and "default" not in keywords:
            spec["default"] = recipe(flag[2:].replace("-", "_"))
        if flag in helps:
            spec["help"] = helps[flag]
        if "help" not in spec:
            raise ValueError(f"{flag} has no shared help text: give the command's")
        group.add_argument(flag, **spec)


def recipe_values(args: argparse.Namespace, names: Sequence[str]) -> dict:
    """The recipe options the user set (those left at their RecipeDefault are not included)."""
    return {name: getattr(args, name) for name in names if not isinstance(getattr(args, name), RecipeDefault)}


def loss_weights(text: str):
    """--loss-weights F,D,I,O -> LossWeights."""
    from segapp.training.losses import LossWeights

    try:
        focal, dice, iou, obj = (float(x) for x in text.split(","))
    except ValueError:
        raise CLIError(f"--loss-weights takes four numbers F,D,I,O, got {text!r}") from None
    return LossWeights(focal, dice, iou, obj)


def check_paired_sources(annotations: Sequence[Path], images: Sequence[Path], what: str = "") -> None:
    """Each annotation file exists and has an existing images folder beside it (`what`: a word
    before "annotation file" and "images folder" in the messages, e.g. "validation")."""
    prefix = f"{what} " if what else ""
    for ann, folder in zip(annotations, images):
        if not ann.is_file():
            raise CLIError(f"{prefix}annotation file not found: {ann}")
        if not folder.is_dir():
            raise CLIError(f"{prefix}images folder not found: {folder}")


def check_image_size(image_size: int | None) -> None:
    if image_size is not None and (image_size <= 0 or image_size % 32):
        raise CLIError(f"--image-size must be a positive multiple of 32, got {image_size}")


def check_init(init: Path | None) -> None:
    if init is not None and not init.is_file():
        raise CLIError(f"--init checkpoint not found: {init}")


def check_out(out: Path, resume: bool, last_name: str) -> None:
    """--resume needs out/last_name; without it, an --out that holds a run is refused."""
    last = out / last_name
    if resume and not last.is_file():
        raise CLIError(f"--resume: {last} does not exist")
    if not resume and last.is_file():
        raise CLIError(f"{out} holds a run already ({last}): pass --resume to continue it, "
                       "or choose another --out")


def build_training_model(config: str, init: Path | None, device: str | None, image_size: int | None,
                         **keywords):
    """build_model for a training command; the errors a user can fix as CLIError."""
    from segapp.build import build_model
    from segapp.checkpoint import CheckpointError

    try:
        return build_model(config, init, device=device, image_size=image_size, **keywords)
    except (ValueError, FileNotFoundError) as err:
        raise CLIError(str(err)) from err
    except CheckpointError as err:
        raise CLIError(f"{err}\n  (pass the --config of this checkpoint)") from err
