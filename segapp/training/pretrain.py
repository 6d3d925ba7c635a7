"""Masked-autoencoder pretraining of a model's Hiera trunk (`segapp pretrain`).

One step: B augmented images (`image_folders`), a random unit mask per image drawn from a
generator seeded by (seed, step), the masked-unit loss of `mae.MaskedAutoencoder`, AdamW
(betas 0.9, 0.95 as MAE; no weight decay on biases, norms, the mask token and position
tables), linear warm-up then cosine decay per step, gradient-norm clipping, bf16 autocast on
CUDA. Image order is a permutation seeded by (seed, epoch), augmentation is seeded by (seed,
epoch, index): a run resumed from last.pt takes the same steps as an uninterrupted one, also
when it stopped mid-epoch.

Outputs in OUT:
- pretrained.safetensors: a whole SAM 2 model of the config (segapp key names) whose image
  encoder trunk is the pretrained one and whose other weights are the config's random
  initialisation, so it loads strictly wherever a checkpoint does: `segapp train --init`,
  `segapp.build_model(config, path)`. Metadata: config, config_yaml, image_size, recipe (JSON),
  step, and `trained_parts = image_encoder.trunk` (so the video paths refuse it). Rewritten at
  every checkpoint.
- last.pt: model, MAE decoder, optimizer, scheduler, step (for --resume).
- log.csv: one row per `log_every` steps (mean loss over them, lr, samples/s).
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from segapp.checkpoint import save_safetensors
from segapp.training.image_folders import ImageFolderDataset
from segapp.training.mae import MaskedAutoencoder
from segapp.training.state import (RunMetadata, optimisation_state, read_state, restore_model, restore_optimiser,
                                   save_state)
from segapp.training.steps import (autocast, autocast_dtype, check_amp, check_at_least_one, cosine_scheduler,
                                   step_generator)
from segapp.training.run_log import append_row, trim_rows

logger = logging.getLogger(__name__)

LAST_NAME, WEIGHTS_NAME, LOG_NAME = "last.pt", "pretrained.safetensors", "log.csv"
LOG_FIELDS = ("epoch", "step", "lr", "loss", "samples_per_s")
TRAINED_PARTS = "image_encoder.trunk"


class PretrainResumeError(ValueError):
    """A last.pt that does not belong to this run (other config, image size or recipe)."""


@dataclass
class PretrainConfig:
    """The recipe. Mask ratio, betas, weight decay and crop scale follow Hiera/MAE; lr and the
    decoder are sized for small models and small data."""

    epochs: int = 100
    batch_size: int = 16
    lr: float = 1e-3  # peak
    weight_decay: float = 0.05
    warmup_steps: int = 200
    min_lr_ratio: float = 0.01
    grad_clip: float = 1.0
    mask_ratio: float = 0.6
    decoder_dim: int = 128
    decoder_depth: int = 2
    decoder_heads: int = 4
    crop_scale: tuple[float, float] = (0.2, 1.0)
    amp: str = "auto"
    seed: int = 0
    workers: int = 0
    max_steps_per_epoch: int | None = None
    log_every: int = 10
    save_every: int = 0  # steps between checkpoints besides the epoch ends (0: epoch ends only)

    def __post_init__(self) -> None:
        self.crop_scale = tuple(self.crop_scale)
        check_at_least_one(self, ("epochs", "batch_size", "log_every", "decoder_dim", "decoder_depth", "decoder_heads"))
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f"mask ratio must be in (0, 1), got {self.mask_ratio}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.warmup_steps < 0 or self.save_every < 0 or self.workers < 0:
            raise ValueError("warmup_steps, save_every and workers must not be negative")
        check_amp(self.amp)

    def to_dict(self) -> dict:
        return asdict(self)


def parameter_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay on the weights of linear and convolution layers only."""
    decay, no_decay = [], []
    for mod in module.modules():
        for name, param in mod.named_parameters(recurse=False):
            is_weight = isinstance(mod, (nn.Linear, nn.Conv2d)) and name == "weight"
            (decay if is_weight else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class Pretrainer:
    """Pretrains `model.image_encoder.trunk` as a masked autoencoder; see the module docstring.

    Args:
      model: a SAM2Model (its trunk is trained in place; the rest is only saved).
      data: the images, at the model's image size.
      config: the recipe.
      out_dir: where checkpoints and logs go.
      config_name: the model config (name or path), for the metadata and resume checks.
      recipe_extra: more recipe facts for the metadata (source folders).
    """

    def __init__(self, model, data: ImageFolderDataset, config: PretrainConfig, out_dir: str | Path,
                 config_name: str = "", recipe_extra: dict | None = None) -> None:
        self.model = model
        self.data = data
        self.config = config
        self.out = Path(out_dir)
        self.config_name = config_name
        self.recipe_extra = dict(recipe_extra or {})
        self.device = next(model.parameters()).device
        self.image_size = int(model.image_size)
        if data.image_size != self.image_size:
            raise ValueError(f"the dataset makes {data.image_size} px samples for a {self.image_size} px model")
        self.mae = MaskedAutoencoder(model.image_encoder.trunk, self.image_size, config.decoder_dim,
                                     config.decoder_depth, config.decoder_heads).to(self.device)
        # foreach: one kernel per operation over all tensors (the per-tensor loop dominates the
        # step of a small model on CPU, where foreach is not the default).
        self.optimizer = torch.optim.AdamW(parameter_groups(self.mae, config.weight_decay), lr=config.lr,
                                           betas=(0.9, 0.95), foreach=True)
        self.steps_per_epoch = len(data) // config.batch_size or 1  # whole batches (one if fewer images)
        if config.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, config.max_steps_per_epoch)
        self.total_steps = self.steps_per_epoch * config.epochs
        self.scheduler = cosine_scheduler(self.optimizer, config.warmup_steps, self.total_steps, config.min_lr_ratio)
        self.step = 0
        self.autocast_dtype = autocast_dtype(config.amp, self.device)
        self._metadata = RunMetadata(config_name, self.image_size)

    # ------------------------------------------------------------------------- one step
    def generator(self, step: int) -> torch.Generator:
        """The mask sampler of step `step`, seeded by (seed, step): the same masks after resuming."""
        return step_generator(self.config.seed, step, "cpu")

    def compute_loss(self, images: torch.Tensor, step: int) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        mask = self.mae.random_mask(images.shape[0], self.config.mask_ratio, self.generator(step))
        with autocast(self.autocast_dtype, self.device):
            return self.mae.loss(images, mask)

    def train_step(self, images: torch.Tensor) -> torch.Tensor:
        """One optimizer step; returns the loss (a 0-d tensor, not synchronised)."""
        self.mae.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.compute_loss(images, self.step)
        loss.backward()
        if self.config.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.mae.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return loss.detach()

    # ------------------------------------------------------------------------- epochs
    def loader(self, epoch: int, skip: int = 0):
        """The batches of `epoch` (1-based) from its `skip`-th on: a permutation seeded by (seed, epoch)."""
        self.data.set_epoch(epoch)
        order = np.random.default_rng([self.config.seed, epoch]).permutation(len(self.data))
        need = self.steps_per_epoch * self.config.batch_size
        order = np.resize(order, need)[skip * self.config.batch_size:].tolist()  # repeats when too few images
        workers = self.config.workers
        return torch.utils.data.DataLoader(self.data, batch_size=self.config.batch_size, sampler=order,
                                           num_workers=workers, pin_memory=self.device.type == "cuda",
                                           persistent_workers=False, prefetch_factor=4 if workers else None)

    def fit(self, resume: bool = False) -> dict:
        """Train up to `config.epochs` epochs (continuing from last.pt with `resume`).
        Returns {"epochs", "steps", "loss" (mean of the last log window), "weights" (path)}."""
        self.out.mkdir(parents=True, exist_ok=True)
        if resume:
            self.load_state(self.out / LAST_NAME)
        cfg = self.config
        logger.info("pretraining the trunk of %s at %d px (%d x %d mask units of %d px, ratio %.2f): %d images, "
                    "%d steps per epoch, steps %d..%d, out %s", self.config_name, self.image_size,
                    *self.mae.grid, self.mae.unit_px, cfg.mask_ratio, len(self.data), self.steps_per_epoch,
                    self.step + 1, self.total_steps, self.out)
        last_loss = math.nan
        while self.step < self.total_steps:
            epoch = self.step // self.steps_per_epoch + 1
            window, count, start = torch.zeros((), device=self.device), 0, time.time()
            for images in self.loader(epoch, skip=self.step % self.steps_per_epoch):
                window += self.train_step(images)
                count += 1
                end_of_epoch = self.step % self.steps_per_epoch == 0
                if count == cfg.log_every or end_of_epoch:
                    last_loss = float(window) / count  # one host sync per log line
                    rate = count * cfg.batch_size / (time.time() - start)
                    self.log(epoch, last_loss, rate)
                    window, count, start = torch.zeros((), device=self.device), 0, time.time()
                if end_of_epoch or (cfg.save_every and self.step % cfg.save_every == 0):
                    self.save()
        return {"epochs": cfg.epochs, "steps": self.step, "loss": last_loss, "weights": self.out / WEIGHTS_NAME}

    def log(self, epoch: int, loss: float, rate: float) -> None:
        if not math.isfinite(loss):
            raise FloatingPointError(f"loss is {loss} at step {self.step}; lower --lr")
        lr = self.scheduler.get_last_lr()[0]
        left = (self.total_steps - self.step) * self.config.batch_size / max(rate, 1e-9)
        logger.info("epoch %d step %d/%d loss %.4f lr %.2e %.1f samples/s, %s left", epoch, self.step,
                    self.total_steps, loss, lr, rate, time.strftime("%H:%M:%S", time.gmtime(left)))
        append_row(self.out / LOG_NAME, LOG_FIELDS, {"epoch": epoch, "step": self.step, "lr": f"{lr:.6g}",
                                                     "loss": f"{loss:.6f}", "samples_per_s": f"{rate:.3f}"})

    # ------------------------------------------------------------------------- outputs
    def metadata(self) -> dict[str, str]:
        recipe = {"pretrain": "mae", **self.config.to_dict(), **self.recipe_extra,
                  "train_image_count": len(self.data)}
        return {**self._metadata(recipe), "step": str(self.step), "trained_parts": TRAINED_PARTS,
                "description": f"trunk pretrained as a masked autoencoder on {len(self.data)} images; "
                               "every other part untrained"}

    def save(self) -> None:
        """pretrained.safetensors and last.pt, each written atomically."""
        save_safetensors(self.model, self.out / WEIGHTS_NAME, self.metadata())
        trunk_prefix = "trunk."
        save_state(self.out / LAST_NAME, {
            **optimisation_state(self.model, self.optimizer, self.scheduler),
            "mae": {k: v for k, v in self.mae.state_dict().items() if not k.startswith(trunk_prefix)},
            "step": self.step,
            "config_name": str(self.config_name),
            "image_size": self.image_size,
            "pretrain_config": json.dumps(self.config.to_dict(), default=str),
            "image_count": len(self.data),
        })

    def load_state(self, path: Path) -> None:
        state = read_state(path, PretrainResumeError)
        saved = json.loads(state["pretrain_config"])
        checks = [("image size", state["image_size"], self.image_size),
                  ("config", state["config_name"], str(self.config_name)),
                  ("image count", state["image_count"], len(self.data))]
        checks += [(f"--{k.replace('_', '-')}", saved[k], v) for k, v in self.config.to_dict().items()
                   if k in ("batch_size", "epochs", "mask_ratio", "decoder_dim", "decoder_depth",
                            "decoder_heads", "seed")]
        for what, was, now in checks:
            if was != now:
                raise PretrainResumeError(f"{path} was pretrained with {what} {was}, this run has {now}: "
                                          "resume with the same settings")
        restore_model(state, self.model)
        missing, unexpected = self.mae.load_state_dict(state["mae"], strict=False)
        if unexpected or any(not k.startswith("trunk.") for k in missing):
            raise PretrainResumeError(f"{path}: its decoder does not fit this run")
        restore_optimiser(state, self.optimizer, self.scheduler)
        self.step = int(state["step"])
        trim_rows(self.out / LOG_NAME, LOG_FIELDS, "step", self.step)
        logger.info("resumed from %s at step %d", path, self.step)
