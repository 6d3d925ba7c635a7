"""A training run on disk: last.pt (for --resume) and the metadata of the weights it writes.

The three trainers (`segapp train`, `train-video`, `pretrain`) write and read their state the
same way: `save_state` writes atomically (a `.tmp` file renamed over last.pt, so a run killed
while saving keeps the previous one), `read_state` loads with `weights_only=True`,
`optimisation_state` / `restore_optimisation` carry the model, optimizer and scheduler (the
scheduler then follows this run's schedule, whose length may have changed), and
`rng_state` / `restore_rng` the global generators where a trainer draws from them.
`RunMetadata` is the safetensors metadata every written weights file starts from.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from segapp.training.steps import follow_schedule


class ResumeError(ValueError):
    """A last.pt that does not belong to this run (other input size or frozen parts, or another
    recipe without allow_changed_recipe)."""


def save_state(path: Path, state: dict) -> None:
    """torch.save `state` to `path`, atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def read_state(path: Path, error: type[Exception]) -> dict:
    """The state saved in `path`; `error` (the trainer's resume error) when there is none."""
    path = Path(path)
    if not path.is_file():
        raise error(f"nothing to resume: {path} does not exist")
    return torch.load(path, map_location="cpu", weights_only=True)


def optimisation_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                       scheduler: torch.optim.lr_scheduler.LRScheduler) -> dict:
    """{"model", "optimizer", "scheduler"}: their state dicts."""
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}


def restore_model(state: dict, model: torch.nn.Module) -> None:
    """Load the saved model weights, strictly."""
    model.load_state_dict(state["model"], strict=True)


def restore_optimiser(state: dict, optimizer: torch.optim.Optimizer,
                      scheduler: torch.optim.lr_scheduler.LambdaLR) -> None:
    """Load the saved optimizer and scheduler; the lr then follows this run's schedule."""
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    follow_schedule(scheduler)


def restore_optimisation(state: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                         scheduler: torch.optim.lr_scheduler.LambdaLR) -> None:
    """The inverse of `optimisation_state`."""
    restore_model(state, model)
    restore_optimiser(state, optimizer, scheduler)


def rng_state() -> dict:
    """The global torch generators (CPU, and every CUDA device when there is one)."""
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def restore_rng(rng: dict) -> None:
    """The inverse of `rng_state` (CUDA states only where CUDA is available)."""
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def check_same_model(path: Path, state: dict, image_size: int, freeze: tuple[str, ...],
                     error: type[Exception]) -> dict:
    """Refuse (with `error`) a saved run of another input size or other frozen parts; returns
    the saved recipe (the JSON of `train_config`)."""
    if state["image_size"] != image_size:
        raise error(f"{path} was trained at {state['image_size']} px, this run is at {image_size} px")
    saved = json.loads(state["train_config"])
    if tuple(saved.get("freeze", ())) != freeze:
        raise error(f"{path} was trained with --freeze {saved.get('freeze')}; resume with the same")
    return saved


class RunMetadata:
    """The metadata of a run's safetensors files: config (name), config_yaml (the composed
    config at the run's image size, composed once, on the first save), image_size and recipe
    (JSON, sorted keys)."""

    def __init__(self, config_name: str, image_size: int) -> None:
        self.config_name = str(config_name)
        self.image_size = int(image_size)
        self._config_yaml: str | None = None

    def config_yaml(self) -> str:
        if self._config_yaml is None:
            from segapp.build import compose_config, describe

            self._config_yaml = (describe(compose_config(self.config_name, [f"image_size={self.image_size}"]))
                                 if self.config_name else "")
        return self._config_yaml

    def __call__(self, recipe: dict) -> dict[str, str]:
        return {"config": self.config_name, "config_yaml": self.config_yaml(), "image_size": str(self.image_size),
                "recipe": json.dumps(recipe, sort_keys=True, default=str)}
