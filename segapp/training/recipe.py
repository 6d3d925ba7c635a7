"""The recipe of `segapp train`: `TrainConfig`, its checks, and what a resumed run may change."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from segapp.training.augment import AugmentConfig
from segapp.training.losses import LossWeights
from segapp.training.parts import FREEZABLE, check_freeze
from segapp.training.steps import check_amp, check_at_least_one

VAL_PROMPTS = ("box", "point", "clicks")
LOSS_RESOLUTIONS = ("mask", "input")
# Data-loading processes by default: one per spare core, at most this many.
MAX_DEFAULT_WORKERS = 8


def default_workers() -> int:
    """Data-loading processes when none are asked for: one per core beside the training
    process (at most MAX_DEFAULT_WORKERS); 0 (load in the training process) on one core."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(MAX_DEFAULT_WORKERS, max(cores - 1, 0))


# Recipe settings a resumed run may change freely: they do not change what is trained.
RESUMABLE_SETTINGS = ("epochs", "workers", "log_every", "val_prompt", "val_clicks")
# Facts about the data in `recipe_extra` that a resumed run must keep (or be allowed to change).
DATA_SETTINGS = ("train_annotations", "train_images", "max_images", "train_image_count")


def recipe_changes(saved: dict, current: dict) -> list[str]:
    """'name: saved -> current' for every setting that differs between two recipes (flattened
    one level: augment.copy_paste_prob), other than RESUMABLE_SETTINGS."""
    def flat(recipe: dict) -> dict:
        out = {}
        for key, value in recipe.items():
            if isinstance(value, dict):
                out.update({f"{key}.{k}": v for k, v in value.items()})
            else:
                out[key] = list(value) if isinstance(value, tuple) else value
        return out

    old, new = flat(saved), flat(current)
    return [f"{k}: {old.get(k, '-')} -> {new.get(k, '-')}" for k in sorted(set(old) | set(new))
            if k.split(".")[0] not in RESUMABLE_SETTINGS and old.get(k) != new.get(k)]


@dataclass
class TrainConfig:
    """The recipe. Defaults follow SAM 2's image training where it applies."""

    epochs: int = 20
    batch_size: int = 4  # images per step
    instances_per_image: int = 8
    lr: float = 1e-4
    encoder_lr_scale: float = 1.0  # the image encoder's lr is lr * this
    weight_decay: float = 0.1
    warmup_steps: int = 100
    min_lr_ratio: float = 0.01  # the cosine decays to lr * this
    grad_clip: float = 0.1  # max gradient norm (SAM 2's value)
    correction_rounds: int = 7  # SAM 2's num_correction_pt_per_frame
    prob_box: float = 0.5  # first prompt: a box with this probability, else a point
    freeze: tuple[str, ...] = ()
    amp: str = "auto"  # auto: bf16 on CUDA, fp32 elsewhere
    seed: int = 0
    workers: int | None = None  # data-loading processes; None: default_workers()
    loss_resolution: str = "mask"  # "mask": the decoder's low-res logits; "input": upsampled to the input
    max_steps_per_epoch: int | None = None
    val_prompt: str = "box"
    val_clicks: int = 3
    log_every: int = 10
    loss: LossWeights = field(default_factory=LossWeights)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        self.freeze = check_freeze(self.freeze)
        check_amp(self.amp)
        if self.loss_resolution not in LOSS_RESOLUTIONS:
            raise ValueError(f"loss_resolution must be one of {LOSS_RESOLUTIONS}, got {self.loss_resolution!r}")
        if self.workers is not None and self.workers < 0:
            raise ValueError(f"workers must not be negative, got {self.workers}")
        if self.val_prompt not in VAL_PROMPTS:
            raise ValueError(f"val_prompt must be one of {VAL_PROMPTS}, got {self.val_prompt!r}")
        check_at_least_one(self, ("epochs", "batch_size", "instances_per_image"))
        if self.correction_rounds < 0 or self.warmup_steps < 0:
            raise ValueError("correction_rounds and warmup_steps must not be negative")
        if set(FREEZABLE) <= set(self.freeze):
            raise ValueError("every part is frozen: nothing to train")

    def to_dict(self) -> dict:
        return asdict(self)
