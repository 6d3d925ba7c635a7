"""What the two trainers that go by epochs (`segapp train`, `train-video`) share: the set-up
of a run (AdamW, the lr schedule over the run's steps, counters, autocast), and its outputs:
after each epoch best.safetensors (when the epoch is the best so far), a log.csv row and
last.pt; at the end final.safetensors.

"Best" is the validation metric, or minus the mean training loss without validation. The log
row is written before last.pt: a run stopped in between redoes the epoch on --resume, and
`run_log.trim_rows` drops the row.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import torch

from segapp.checkpoint import save_safetensors
from segapp.training.run_log import append_row
from segapp.training.state import RunMetadata
from segapp.training.steps import autocast_dtype, cosine_scheduler

LAST_NAME, BEST_NAME, FINAL_NAME, LOG_NAME = "last.pt", "best.safetensors", "final.safetensors", "log.csv"


class EpochRun:
    """Base of the epoch trainers: `set_up` in their constructor; they add `metadata()` and
    `save_state(path)`, and name their log columns (`log_fields`) and their validation metric's
    column (`val_field`)."""

    log_fields: tuple[str, ...] = ()
    val_field = "val"

    def set_up(self, model, data, config, out_dir: str | Path, val_data, config_name: str, recipe_extra: dict | None,
               parameter_groups: Callable, batches: int, unit: str) -> None:
        """The run's state before its first step. parameter_groups(model, config): the AdamW
        groups (it marks the frozen parameters); batches: optimizer steps in a whole epoch (cut
        to config.max_steps_per_epoch); unit: what the dataset makes, for the size error."""
        self.model = model
        self.data = data
        self.config = config
        self.out = Path(out_dir)
        self.val_data = val_data
        self.config_name = config_name
        self.recipe_extra = dict(recipe_extra or {})
        self.device = model.device
        self.image_size = model.image_size
        if data.image_size != self.image_size:
            raise ValueError(f"the dataset makes {data.image_size} px {unit} for a {self.image_size} px model")
        self.optimizer = torch.optim.AdamW(parameter_groups(model, config), lr=config.lr)
        self.steps_per_epoch = batches
        if config.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, config.max_steps_per_epoch)
        self.scheduler = cosine_scheduler(self.optimizer, config.warmup_steps, self.steps_per_epoch * config.epochs,
                                          config.min_lr_ratio)
        self.epoch = 0  # epochs completed
        self.step = 0  # optimizer steps taken
        self.best = -math.inf
        self.autocast_dtype = autocast_dtype(config.amp, self.device)
        self.run_metadata = RunMetadata(config_name, self.image_size)

    def save_weights(self, path: Path, extra: dict[str, str]) -> Path:
        return save_safetensors(self.model, path, {**self.metadata(), **extra})

    def end_epoch(self, epoch: int, means: dict[str, float], val: float | None, start: float, **row) -> bool:
        """Record epoch `epoch` (mean training statistics `means`, validation metric `val` or
        None, started at time `start`; `row`: more log columns) -> whether it is the best so far."""
        self.epoch = epoch
        metric = val if val is not None else -means.get("loss", math.inf)
        improved = metric > self.best
        if improved:
            self.best = metric
            self.save_weights(self.out / BEST_NAME, {"epoch": str(epoch), self.val_field: str(val)})
        append_row(self.out / LOG_NAME, self.log_fields,
                   {"epoch": epoch, "step": self.step, "lr": self.scheduler.get_last_lr()[0], **means,
                    self.val_field: val, **row, "seconds": round(time.time() - start, 2)})
        self.save_state(self.out / LAST_NAME)
        return improved

    def finish(self) -> dict:
        """final.safetensors -> {"epochs", "steps", "best", "final" (its path)}."""
        final = self.save_weights(self.out / FINAL_NAME, {"epoch": str(self.epoch)})
        return {"epochs": self.epoch, "steps": self.step, "best": self.best, "final": final}
