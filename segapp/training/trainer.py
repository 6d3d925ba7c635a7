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
   single-point round, the single output otherwise) at the input resolution; the step's loss
   is their mean.
AdamW (no weight decay on biases, norms, embeddings and position tables), linear warm-up then
cosine decay per step, gradient-norm clipping, bf16 autocast on CUDA. The memory parts
(memory attention, memory encoder, object pointers, temporal encodings) are never trained here.

Outputs in OUT: last.pt (weights, optimizer, scheduler, epoch, step, RNG states: --resume),
best.safetensors (best validation mIoU, or lowest training loss without validation),
final.safetensors (the last weights), log.csv (one row per epoch); metadata of the
safetensors files: config (name and composed YAML), image_size, recipe (JSON).
"""
from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from segapp.checkpoint import save_safetensors
from segapp.image_predictor import LOW_RES_LOGIT_CLAMP
from segapp.training import prompts as P
from segapp.training.data import AugmentConfig, Batch, CocoInstanceDataset, collate
from segapp.training.losses import LossWeights, multimask_loss

logger = logging.getLogger(__name__)

FREEZABLE = ("image_encoder", "prompt_encoder", "mask_decoder")
# Parts of SAM2Model the image path uses; everything else (memory) is never trained here.
IMAGE_PATH_PARTS = ("image_encoder", "prompt_encoder", "mask_decoder", "no_mem_embed")
LAST_NAME, BEST_NAME, FINAL_NAME, LOG_NAME = "last.pt", "best.safetensors", "final.safetensors", "log.csv"
LOG_FIELDS = ("epoch", "step", "lr", "loss", "focal", "dice", "iou", "object_score",
              "train_iou_first", "train_iou_last", "val_miou", "seconds")
AMP_MODES = ("auto", "bf16", "off")
VAL_PROMPTS = ("box", "point", "clicks")


class ResumeError(ValueError):
    """A last.pt that does not belong to this run (other input size or frozen parts)."""


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
    workers: int = 0
    max_steps_per_epoch: int | None = None
    val_prompt: str = "box"
    val_clicks: int = 3
    log_every: int = 10
    loss: LossWeights = field(default_factory=LossWeights)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        self.freeze = tuple(self.freeze)
        unknown = sorted(set(self.freeze) - set(FREEZABLE))
        if unknown:
            raise ValueError(f"cannot freeze {unknown}; choose from {FREEZABLE}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        if self.val_prompt not in VAL_PROMPTS:
            raise ValueError(f"val_prompt must be one of {VAL_PROMPTS}, got {self.val_prompt!r}")
        for name in ("epochs", "batch_size", "instances_per_image"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.correction_rounds < 0 or self.warmup_steps < 0:
            raise ValueError("correction_rounds and warmup_steps must not be negative")
        if set(FREEZABLE) <= set(self.freeze):
            raise ValueError("every part is frozen: nothing to train")

    def to_dict(self) -> dict:
        return asdict(self)


class WarmupCosine:
    """lr factor at optimizer step s: linear warm-up to 1 over `warmup` steps, then cosine to
    `min_ratio` at `total` steps (and `min_ratio` after)."""

    def __init__(self, warmup: int, total: int, min_ratio: float) -> None:
        self.warmup, self.total, self.min_ratio = warmup, max(total, 1), min_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        span = max(self.total - self.warmup, 1)
        progress = min((step - self.warmup) / span, 1.0)
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def parameter_groups(model: nn.Module, config: TrainConfig) -> list[dict]:
    """AdamW groups over the trained parameters; marks every other parameter frozen.

    Weight decay applies to the weights of linear and convolution layers only: biases, norms,
    embeddings and position tables keep their scale.
    """
    trained = {n for n in IMAGE_PATH_PARTS if n not in config.freeze}
    decay_types = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            full = f"{module_name}.{name}" if module_name else name
            part = full.split(".", 1)[0]
            param.requires_grad_(part in trained)
            if part not in trained:
                continue
            decay = isinstance(module, decay_types) and name == "weight"
            groups.setdefault((part == "image_encoder", decay), []).append(param)
    out = []
    for (encoder, decay), params in sorted(groups.items()):
        scale = config.encoder_lr_scale if encoder else 1.0
        out.append({"params": params, "lr": config.lr * scale,
                    "weight_decay": config.weight_decay if decay else 0.0})
    return out


@dataclass
class StepStats:
    loss: float
    terms: dict[str, float]
    iou_first: float
    iou_last: float


class Trainer:
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

    def __init__(self, model, train_data: CocoInstanceDataset, config: TrainConfig, out_dir: str | Path,
                 val_data=None, config_name: str = "", recipe_extra: dict | None = None) -> None:
        self.model = model
        self.data = train_data
        self.config = config
        self.out = Path(out_dir)
        self.val_data = val_data
        self.config_name = config_name
        self.recipe_extra = dict(recipe_extra or {})
        self._config_yaml: str | None = None  # composed once, on the first save
        self.device = model.device
        self.image_size = model.image_size
        if train_data.image_size != self.image_size:
            raise ValueError(f"the dataset makes {train_data.image_size} px samples for a "
                             f"{self.image_size} px model")
        self.optimizer = torch.optim.AdamW(parameter_groups(model, config), lr=config.lr)
        self.steps_per_epoch = math.ceil(len(train_data) / config.batch_size)
        if config.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, config.max_steps_per_epoch)
        total = self.steps_per_epoch * config.epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, WarmupCosine(min(config.warmup_steps, total // 2), total, config.min_lr_ratio))
        self.epoch = 0  # epochs completed
        self.step = 0  # optimizer steps taken
        self.best = -math.inf
        use_bf16 = config.amp == "bf16" or (config.amp == "auto" and self.device.type == "cuda")
        self.autocast_dtype = torch.bfloat16 if use_bf16 else None

    # ------------------------------------------------------------------------- one step
    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def generator(self, step: int) -> torch.Generator:
        """The prompt sampler of optimizer step `step`: seeded by (seed, step), so a resumed run
        draws the same prompts as an uninterrupted one."""
        gen = torch.Generator(device=self.device)
        gen.manual_seed(self.config.seed * 1_000_003 + step)
        return gen

    def compute_loss(self, batch: Batch, generator: torch.Generator) -> tuple[torch.Tensor, StepStats]:
        """The loss of one batch over all prompt rounds (see the module docstring)."""
        model, cfg, size = self.model, self.config, self.image_size
        batch = batch.to(self.device)
        targets = batch.masks  # [P, S, S] bool
        with self._autocast():
            embedding = model.embed_images(batch.images)
            image_embed = embedding.image_embed[batch.image_index]
            high_res = [f[batch.image_index] for f in embedding.high_res_feats] or None
            image_pe = model.prompt_encoder.get_dense_pe()
            use_box = bool(torch.rand((), generator=generator, device=self.device) < cfg.prob_box)
            if use_box:
                coords, labels = P.box_prompts(targets, generator)
            else:
                coords, labels = P.point_prompts(targets, generator)
            rows = torch.arange(targets.shape[0], device=self.device)
            mask_input = None
            rounds, losses = 1 + cfg.correction_rounds, []
            terms_sum: dict[str, float] = {}
            ious = []
            for r in range(rounds):
                sparse, dense = model.prompt_encoder(points=(coords, labels), boxes=None, masks=mask_input)
                out = model.mask_decoder(image_embeddings=image_embed, image_pe=image_pe,
                                         sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                         multimask_output=(r == 0 and not use_box), repeat_image=False,
                                         high_res_features=high_res)
                logits = F.interpolate(out.masks.float(), size=(size, size), mode="bilinear",
                                       align_corners=False)
                terms = multimask_loss(logits, out.iou_pred, out.object_score_logits, targets[:, None],
                                       cfg.loss)
                losses.append(terms.total)
                for k, v in terms.as_floats().items():
                    terms_sum[k] = terms_sum.get(k, 0.0) + v / rounds
                ious.append(float(terms.chosen_iou.mean()))
                if r + 1 < rounds:
                    kept = out.iou_pred.argmax(dim=1)  # what a user of the predictor keeps
                    mask_input = out.masks[rows, kept][:, None].detach().float().clamp(
                        -LOW_RES_LOGIT_CLAMP, LOW_RES_LOGIT_CLAMP)
                    pred = logits[rows, kept].detach() > 0
                    xy, lab = P.corrective_clicks(targets, pred, generator)
                    coords, labels = torch.cat([coords, xy], 1), torch.cat([labels, lab], 1)
            loss = torch.stack(losses).mean()
        return loss, StepStats(float(loss.detach()), terms_sum, ious[0], ious[-1])

    def train_step(self, batch: Batch) -> StepStats:
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss, stats = self.compute_loss(batch, self.generator(self.step))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {float(loss)} at step {self.step}; lower --lr")
        loss.backward()
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        if self.config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return stats

    # ------------------------------------------------------------------------- epochs
    def loader(self, epoch: int):
        """The batches of `epoch`: a permutation seeded by (seed, epoch)."""
        self.data.set_epoch(epoch)
        order = np.random.default_rng([self.config.seed, epoch]).permutation(len(self.data)).tolist()
        order = order[: self.steps_per_epoch * self.config.batch_size]
        return torch.utils.data.DataLoader(self.data, batch_size=self.config.batch_size, sampler=order,
                                           collate_fn=collate, num_workers=self.config.workers,
                                           pin_memory=self.device.type == "cuda")

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

    def fit(self, resume: bool = False) -> dict:
        """Train up to `config.epochs` epochs (continuing from last.pt with `resume`).
        Returns {"epochs", "steps", "best" (val mIoU, or minus the training loss without
        validation), "final" (path of final.safetensors)}."""
        self.out.mkdir(parents=True, exist_ok=True)
        if resume:
            self.load_state(self.out / LAST_NAME)
        cfg = self.config
        logger.info("training %s at %d px: %d images, %d steps per epoch, epochs %d..%d, out %s",
                    self.config_name, self.image_size, len(self.data), self.steps_per_epoch,
                    self.epoch + 1, cfg.epochs, self.out)
        while self.epoch < cfg.epochs:
            epoch = self.epoch + 1
            start = time.time()
            sums: dict[str, float] = {}
            count = 0
            for i, batch in enumerate(self.loader(epoch)):
                stats = self.train_step(batch)
                count += 1
                row = {"loss": stats.loss, **{k: v for k, v in stats.terms.items() if k != "total"},
                       "train_iou_first": stats.iou_first, "train_iou_last": stats.iou_last}
                for k, v in row.items():
                    sums[k] = sums.get(k, 0.0) + v
                if (i + 1) % cfg.log_every == 0 or i + 1 == self.steps_per_epoch:
                    logger.info("epoch %d step %d/%d loss %.4f (focal %.4f dice %.4f iou %.4f obj %.4f) "
                                "train IoU %.3f -> %.3f lr %.2e %.2f s/step", epoch, i + 1,
                                self.steps_per_epoch, stats.loss, stats.terms["focal"], stats.terms["dice"],
                                stats.terms["iou"], stats.terms["object_score"], stats.iou_first,
                                stats.iou_last, self.scheduler.get_last_lr()[0], (time.time() - start) / (i + 1))
            means = {k: v / max(count, 1) for k, v in sums.items()}
            val = self.validate()
            self.epoch = epoch
            metric = val if val is not None else -means.get("loss", math.inf)
            improved = metric > self.best
            if improved:
                self.best = metric
                self.save_weights(self.out / BEST_NAME, {"epoch": str(epoch), "val_miou": str(val)})
            # The log row first: a run stopped before last.pt is written redoes the epoch on
            # --resume, and trim_log drops the row.
            self.append_log({"epoch": epoch, "step": self.step, "lr": self.scheduler.get_last_lr()[0],
                             **means, "val_miou": val, "seconds": round(time.time() - start, 2)})
            self.save_state(self.out / LAST_NAME)
            logger.info("epoch %d done: loss %.4f, train IoU %.3f, val mIoU %s%s", epoch,
                        means.get("loss", float("nan")), means.get("train_iou_last", float("nan")),
                        "-" if val is None else f"{val:.4f}", " (best)" if improved else "")
        final = self.save_weights(self.out / FINAL_NAME, {"epoch": str(self.epoch)})
        return {"epochs": self.epoch, "steps": self.step, "best": self.best, "final": final}

    # ------------------------------------------------------------------------- outputs
    def metadata(self) -> dict[str, str]:
        from segapp.build import compose_config, describe

        if self._config_yaml is None:
            self._config_yaml = ""
            if self.config_name:
                self._config_yaml = describe(compose_config(self.config_name, [f"image_size={self.image_size}"]))
        recipe = {**self.config.to_dict(), **self.recipe_extra}
        return {"config": str(self.config_name), "config_yaml": self._config_yaml, "image_size": str(self.image_size),
                "recipe": json.dumps(recipe, sort_keys=True, default=str)}

    def save_weights(self, path: Path, extra: dict[str, str]) -> Path:
        return save_safetensors(self.model, path, {**self.metadata(), **extra})

    def save_state(self, path: Path) -> None:
        """Everything --resume needs, written atomically."""
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "best": self.best,
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
            "config_name": str(self.config_name),
            "image_size": self.image_size,
            "train_config": json.dumps(self.config.to_dict(), default=str),
        }
        tmp = path.with_name(path.name + ".tmp")
        torch.save(state, tmp)
        tmp.replace(path)

    def load_state(self, path: Path) -> None:
        if not path.is_file():
            raise ResumeError(f"nothing to resume: {path} does not exist")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state["image_size"] != self.image_size:
            raise ResumeError(f"{path} was trained at {state['image_size']} px, this run is at {self.image_size} px")
        saved = json.loads(state["train_config"])
        if tuple(saved.get("freeze", ())) != self.config.freeze:
            raise ResumeError(f"{path} was trained with --freeze {saved.get('freeze')}; resume with the same")
        self.model.load_state_dict(state["model"], strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch, self.step, self.best = int(state["epoch"]), int(state["step"]), float(state["best"])
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.trim_log(self.epoch)
        logger.info("resumed from %s: %d epochs, %d steps done", path, self.epoch, self.step)

    def append_log(self, row: dict) -> None:
        path = self.out / LOG_NAME
        new = not path.is_file()
        with open(path, "a", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=LOG_FIELDS, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in LOG_FIELDS})

    def trim_log(self, epochs_done: int) -> None:
        """Drop log rows of epochs after the checkpoint (written before an interruption)."""
        path = self.out / LOG_NAME
        if not path.is_file():
            return
        with open(path, newline="", encoding="utf-8") as f:
            rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= epochs_done]
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=LOG_FIELDS)
            writer.writeheader()
            writer.writerows(rows)

