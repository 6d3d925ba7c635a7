"""The training loop of the image path (`segapp train`).

One step, for a batch of B images with P sampled instances in all:
1. embed the B images once (under no_grad when the image encoder is frozen, so none of its
   activations are kept), then gather each instance's image embedding (`repeat_image=False`);
2. first prompt for all P instances: jittered boxes, or one positive point each (one choice
   per step, as SAM 2 does, so every prompt has the same number of tokens);
3. `correction_rounds` more rounds: a corrective click from the error region of the previous
   mask (the output of highest predicted IoU, as a user of the predictor would keep), added
   to the clicks so far, with the previous low-res logits (clamped, detached) as mask input;
4. each round's loss (`losses.multimask_loss`: multimask output with the lowest loss on the
   single-point round, the single output otherwise) on the low-res logits against soft targets
   (`loss_resolution="mask"`, default) or at the input resolution ("input", SAM 2's); the
   step's loss is their mean.
Nothing in a step reads a value back to the host (statistics stay on the device until they are
logged); samples are made in persistent DataLoader workers from (seed, epoch, index). Steps 2-4
are `rounds.run_rounds`; on CPU they run split over threads (`rounds.run_rounds_threaded`).
AdamW (no weight decay on biases, norms, embeddings and position tables), linear warm-up then
cosine decay per step, gradient-norm clipping, bf16 autocast on CUDA. The memory parts
(memory attention, memory encoder, object pointers, temporal encodings) are never trained here.

Outputs in OUT: last.pt (weights, optimizer, scheduler, epoch, step, RNG states: --resume),
best.safetensors (best validation mIoU, or lowest training loss without validation),
final.safetensors (the last weights), log.csv (one row per epoch); metadata of the
safetensors files: config (name and composed YAML), image_size, recipe (JSON).
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from segapp.training import rounds as R
from segapp.training.rounds import loss_targets_at  # noqa: F401  (part of this module's interface)
from segapp.training.data import Batch, CocoInstanceDataset, EpochSampler, collate
from segapp.training.parts import IMAGE_PATH_PARTS, decay_groups
from segapp.training.recipe import DATA_SETTINGS, TrainConfig, default_workers, recipe_changes
from segapp.training.epochs import LAST_NAME, LOG_NAME, EpochRun
from segapp.training.run_log import trim_rows
from segapp.training.state import (ResumeError, check_same_model, optimisation_state, read_state,
                                   restore_optimisation, restore_rng, rng_state, save_state)
from segapp.training.steps import autocast, step_generator

logger = logging.getLogger(__name__)

LOG_FIELDS = ("epoch", "step", "lr", "loss", "focal", "dice", "iou", "object_score",
              "train_iou_first", "train_iou_last", "val_miou", "seconds")
# Samples each worker prepares ahead of the step that needs them.
PREFETCH_FACTOR = 4


def parameter_groups(model: nn.Module, config: TrainConfig) -> list[dict]:
    """AdamW groups over the image path's unfrozen parts (`parts.decay_groups`), the image
    encoder at lr * encoder_lr_scale; marks every other parameter frozen (the memory parts are
    never trained here)."""
    trained = [n for n in IMAGE_PATH_PARTS if n not in config.freeze]
    return decay_groups(model, trained, config.lr, config.weight_decay, lambda part: part == "image_encoder",
                        config.encoder_lr_scale)


STAT_NAMES = ("loss", "focal", "dice", "iou", "object_score", "train_iou_first", "train_iou_last")


@dataclass
class StepStats:
    """The numbers of one step (or a sum of steps), kept on the device as one tensor
    `values` [len(STAT_NAMES)] so that a step needs no host synchronisation; `as_dict()`
    reads them (one synchronisation)."""

    values: torch.Tensor

    def as_dict(self) -> dict[str, float]:
        return dict(zip(STAT_NAMES, self.values.tolist()))

    @property
    def loss(self) -> float:
        return float(self.values[0])


def check_finite(loss: float, first_step: int, end_step: int) -> None:
    """Stop on a non-finite mean loss of steps first_step..end_step - 1."""
    if not math.isfinite(loss):
        raise FloatingPointError(f"loss is {loss} in steps {first_step}..{end_step - 1}; lower --lr")


class Trainer(EpochRun):
    """Trains a SAM2Model's image path on a CocoInstanceDataset; see the module docstring.

    Args:
      model: the model, on its device.
      train_data: training samples.
      config: the recipe.
      out_dir: where checkpoints and logs go.
      val_data: a `segapp.evaluation.CocoInstances` for validation mIoU per epoch, or None.
      config_name: the model config (name or path), written into the checkpoints' metadata.
      recipe_extra: more recipe facts for the metadata (data paths, init checkpoint).
    """

    log_fields = LOG_FIELDS
    val_field = "val_miou"

    def __init__(self, model, train_data: CocoInstanceDataset, config: TrainConfig, out_dir: str | Path,
                 val_data=None, config_name: str = "", recipe_extra: dict | None = None) -> None:
        self.set_up(model, train_data, config, out_dir, val_data, config_name, recipe_extra, parameter_groups,
                    math.ceil(len(train_data) / config.batch_size), "samples")
        self._loader: torch.utils.data.DataLoader | None = None
        # Fast path on CPU: each step's prompt rounds split over threads (training.rounds; the
        # same losses and gradients up to float rounding). None: as many as rounds.round_threads
        # picks; 1: every round on this thread.
        self.round_threads: int | None = None

    # ------------------------------------------------------------------------- one step
    def _autocast(self):
        return autocast(self.autocast_dtype, self.device)

    def generator(self, step: int) -> torch.Generator:
        """The prompt sampler of optimizer step `step`: seeded by (seed, step), so a resumed run
        draws the same prompts as an uninterrupted one."""
        return step_generator(self.config.seed, step, self.device)

    def first_prompt_is_box(self, step: int) -> bool:
        """Whether step `step` starts from boxes (else from one point per instance): drawn on the
        host from (seed, step), so that the choice costs no device synchronisation."""
        return bool(np.random.default_rng([self.config.seed, step]).random() < self.config.prob_box)

    def compute_loss(self, batch: Batch, generator: torch.Generator, use_box: bool | None = None
                     ) -> tuple[torch.Tensor, StepStats]:
        """The loss of one batch over all prompt rounds (see the module docstring).

        use_box: the kind of first prompt; None draws it from `generator` (train_step passes
        `first_prompt_is_box(step)`). Nothing here reads a value back to the host: the
        statistics stay on the device (StepStats).
        """
        model, cfg, size = self.model, self.config, self.image_size
        batch = batch.to(self.device)
        targets = batch.masks  # [P, S, S] bool
        if use_box is None:
            use_box = bool(torch.rand((), generator=generator, device=self.device) < cfg.prob_box)
        draws = R.draw(generator, targets.shape[0], use_box, cfg.correction_rounds, self.device)
        totals = (targets.flatten(1).any(dim=1).sum().float(), targets.shape[0])
        with self._autocast():
            image_pe = model.prompt_encoder.get_dense_pe()

        def encode(images: torch.Tensor) -> list[torch.Tensor]:
            """Image embeddings and high-res features, channels last: the layout in which the
            decoder's training fast path reads them (MaskDecoder matmul_convs), converted once
            per image, not once per round and prompt."""
            embedding = model.embed_images(images)
            return [f.contiguous(memory_format=torch.channels_last)
                    for f in (embedding.image_embed, *embedding.high_res_feats)]

        def rounds(rows: list[torch.Tensor], index: torch.Tensor | None) -> R.RoundsOutput:
            """The rounds of the prompts `index` (all: None), given their feature rows."""
            part = (lambda t: t) if index is None else (lambda t: t[index])
            return R.run_rounds(model, cfg, size, rows[0], rows[1:] or None, image_pe, part(targets),
                                draws if index is None else draws.rows(index), use_box, totals)

        threads = self.round_threads or R.round_threads(self.device, targets.shape[0])
        if threads > 1:
            loss, values = R.run_rounds_threaded(model, encode, batch.images, batch.image_index, threads,
                                                 self._autocast, rounds)
            return loss, StepStats(values)
        with self._autocast():
            out = rounds([f[batch.image_index] for f in encode(batch.images)], None)
        return out.loss, StepStats(out.values)

    def train_step(self, batch: Batch) -> StepStats:
        """One optimizer step. A non-finite loss is noticed when the statistics are read
        (`check_finite`), not here: that would wait for the device every step."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss, stats = self.compute_loss(batch, self.generator(self.step), self.first_prompt_is_box(self.step))
        loss.backward()
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        if self.config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return stats

    # ------------------------------------------------------------------------- epochs
    @property
    def workers(self) -> int:
        return default_workers() if self.config.workers is None else self.config.workers

    def loader(self, epoch: int) -> torch.utils.data.DataLoader:
        """The batches of `epoch`: a permutation seeded by (seed, epoch) (EpochSampler). One
        DataLoader serves every epoch, so its workers (persistent, each preparing
        PREFETCH_FACTOR samples ahead) start once per run."""
        self.data.set_epoch(epoch)
        if self._loader is None:
            workers = self.workers
            sampler = EpochSampler(len(self.data), self.config.seed, self.steps_per_epoch * self.config.batch_size)
            self._loader = torch.utils.data.DataLoader(
                self.data, batch_size=self.config.batch_size, sampler=sampler, collate_fn=collate,
                num_workers=workers, pin_memory=self.device.type == "cuda", persistent_workers=workers > 0,
                prefetch_factor=PREFETCH_FACTOR if workers > 0 else None)
        self._loader.sampler.set_epoch(epoch)
        return self._loader

    def validate(self) -> float | None:
        """Validation mIoU (the last click's for the clicks prompt) with the evaluation code."""
        if self.val_data is None:
            return None
        from segapp.evaluation import evaluate
        from segapp.image_predictor import ImagePredictor

        self.model.eval()
        try:
            num_clicks = self.config.val_clicks if self.config.val_prompt == "clicks" else None
            result = evaluate(ImagePredictor(self.model), self.val_data, self.config.val_prompt, num_clicks)
        finally:
            self.model.train()
        overall = result.metrics.get("overall", {})
        if not overall.get("count"):
            logger.warning("validation evaluated no instance")
            return None
        return float(overall["miou"][-1])

    def fit(self, resume: bool = False, allow_changed_recipe: bool = False) -> dict:
        """Train up to `config.epochs` epochs (continuing from last.pt with `resume`; see
        load_state for allow_changed_recipe).
        Returns {"epochs", "steps", "best" (val mIoU, or minus the training loss without
        validation), "final" (path of final.safetensors)}."""
        self.out.mkdir(parents=True, exist_ok=True)
        if resume:
            self.load_state(self.out / LAST_NAME, allow_changed_recipe)
        cfg = self.config
        logger.info("training %s at %d px: %d images, %d steps per epoch, epochs %d..%d, out %s",
                    self.config_name, self.image_size, len(self.data), self.steps_per_epoch,
                    self.epoch + 1, cfg.epochs, self.out)
        while self.epoch < cfg.epochs:
            epoch = self.epoch + 1
            start = time.time()
            window_sum, window, count = None, 0, 0
            sums: dict[str, float] = {}

            def read_window() -> dict[str, float]:
                """The mean statistics of the steps since the last read (one synchronisation)."""
                row = StepStats(window_sum / window).as_dict()
                check_finite(row["loss"], self.step - window, self.step)
                for k, v in row.items():
                    sums[k] = sums.get(k, 0.0) + v * window
                return row

            for i, batch in enumerate(self.loader(epoch)):
                stats = self.train_step(batch)
                count += 1
                window += 1
                # The sums stay on the device, read every log_every steps and at the epoch's end.
                window_sum = stats.values if window_sum is None else window_sum + stats.values
                if (i + 1) % cfg.log_every == 0 or i + 1 == self.steps_per_epoch:
                    row = read_window()
                    logger.info("epoch %d step %d/%d loss %.4f (focal %.4f dice %.4f iou %.4f obj %.4f) "
                                "train IoU %.3f -> %.3f lr %.2e %.2f s/step", epoch, i + 1,
                                self.steps_per_epoch, row["loss"], row["focal"], row["dice"], row["iou"],
                                row["object_score"], row["train_iou_first"], row["train_iou_last"],
                                self.scheduler.get_last_lr()[0], (time.time() - start) / (i + 1))
                    window_sum, window = None, 0
            if window:
                read_window()
            means = {k: v / max(count, 1) for k, v in sums.items()}
            val = self.validate()
            improved = self.end_epoch(epoch, means, val, start)
            logger.info("epoch %d done: loss %.4f, train IoU %.3f, val mIoU %s%s", epoch,
                        means.get("loss", float("nan")), means.get("train_iou_last", float("nan")),
                        "-" if val is None else f"{val:.4f}", " (best)" if improved else "")
        return self.finish()

    # ------------------------------------------------------------------------- outputs
    def metadata(self) -> dict[str, str]:
        return self.run_metadata({**self.config.to_dict(), **self.recipe_extra})

    def save_state(self, path: Path) -> None:
        """Everything --resume needs, written atomically."""
        save_state(path, {
            **optimisation_state(self.model, self.optimizer, self.scheduler),
            "epoch": self.epoch,
            "step": self.step,
            "best": self.best,
            "rng": rng_state(),
            "config_name": str(self.config_name),
            "image_size": self.image_size,
            "train_config": json.dumps(self.config.to_dict(), default=str),
            "data": json.dumps({k: self.recipe_extra.get(k) for k in DATA_SETTINGS}, default=str),
        })

    def load_state(self, path: Path, allow_changed_recipe: bool = False) -> None:
        """Continue from `path` (last.pt). The input size and frozen parts must be those of the
        saved run; any other change of recipe or data (but RESUMABLE_SETTINGS) is refused with
        the list of changes, or only logged with allow_changed_recipe."""
        state = read_state(path, ResumeError)
        saved = check_same_model(path, state, self.image_size, self.config.freeze, ResumeError)
        current = json.loads(json.dumps(self.config.to_dict(), default=str))
        saved_data = json.loads(state.get("data", "{}"))
        current_data = json.loads(json.dumps({k: self.recipe_extra.get(k) for k in DATA_SETTINGS}, default=str))
        changes = recipe_changes({**saved, **saved_data}, {**current, **current_data})
        if changes and not allow_changed_recipe:
            raise ResumeError(f"{path} was trained with another recipe or data; changed: " + "; ".join(changes)
                              + ". Resume with the same settings, or pass --allow-changed-recipe")
        if changes:
            logger.warning("resuming with a changed recipe: %s", "; ".join(changes))
        restore_optimisation(state, self.model, self.optimizer, self.scheduler)
        self.epoch, self.step, self.best = int(state["epoch"]), int(state["step"]), float(state["best"])
        restore_rng(state["rng"])
        trim_rows(self.out / LOG_NAME, LOG_FIELDS, "epoch", self.epoch)
        logger.info("resumed from %s: %d epochs, %d steps done", path, self.epoch, self.step)

