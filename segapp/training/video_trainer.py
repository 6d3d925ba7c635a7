"""Training the video memory on clips (`segapp train-video`), as SAM 2 trains it.

One step, for a clip of T frames and K objects (all visible on its first frame):
1. image features of the T frames in one batch (under no_grad when the image encoder is
   frozen, so none of its activations are kept);
2. frame 0 is the conditioning frame: a prompt per object, the same kind for all of them (the
   ground-truth mask with probability `prob_mask`, else a jittered box with `prob_box`, else
   one positive click). A mask is taken as the output itself (as the predictor does); a box or
   click goes through the SAM heads without memory, then `correction_rounds` corrective clicks
   (each from the error region of the previous output, with its logits as mask input);
3. frames 1..T-1 go through the tracking step of the video predictor (`segapp.video.tracker`):
   memory attention over the memories of the conditioning frame and the previous frames (and
   the object pointers), the SAM heads, then the memory encoder writes this frame's memory.
   With probability `prob_correct_frame` one random later frame also gets corrective clicks
   after its tracked prediction, as a user fixing a drift would;
4. every decoder output of every frame gets the image trainer's loss (`losses.multimask_loss`:
   focal + dice + IoU on the output of lowest loss, object score against "is the object on this
   frame"); frames where the object is absent teach only "absent". The step's loss is the mean
   over frames of the mean over their rounds.
Gradients flow through the memories to the memory encoder, memory attention, object-pointer
projections, temporal encodings and no-object embeddings (the "memory parts"), and into the
image path unless frozen. The mask loss is taken on the decoder's masks before the absent-object
score is written into them, so a missed object still teaches the mask head; memories and
tracked outputs use the masks as the predictor does.

Outputs in OUT as the image trainer's (last.pt for --resume, best.safetensors by validation J
or training loss, final.safetensors, log.csv); the safetensors metadata has `trained_parts`,
which lists the memory parts, so `VideoPredictor` accepts the weights.
"""
from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from segapp.bundled import TRAINED_PARTS_KEY
from segapp.image_predictor import LOW_RES_LOGIT_CLAMP
from segapp.training import prompts as P
from segapp.training.losses import LossWeights, mask_iou, multimask_loss
from segapp.training.parts import IMAGE_PATH_PARTS, MEMORY_PARTS, check_freeze, decay_groups
from segapp.training.state import (ResumeError, check_same_model, optimisation_state, read_state,
                                   restore_optimisation, save_state)
from segapp.training.steps import autocast, check_amp, check_at_least_one, step_generator
from segapp.training.clip_augment import ClipAugment
from segapp.training.video_data import Clip, collate_clip
from segapp.video.session import ObjectTrack
from segapp.video.tracker import FrameFeatures, StepOutput, Tracker, select_memory
from segapp.training.epochs import LAST_NAME, LOG_NAME, EpochRun
from segapp.training.run_log import trim_rows

logger = logging.getLogger(__name__)

LOG_FIELDS = ("epoch", "step", "lr", "loss", "focal", "dice", "iou", "object_score", "train_j", "val_j",
              "clips", "seconds")
PROMPTS = ("mask", "box", "point")


@dataclass
class VideoTrainConfig:
    """The recipe. Defaults follow SAM 2's video training where it applies (8-frame clips, up to
    3 objects, half the first prompts masks, a corrected later frame every other clip)."""

    epochs: int = 10
    clip_frames: int = 8
    max_objects: int = 3
    lr: float = 1e-4
    image_lr_scale: float = 1.0  # lr of the image path's parts (when not frozen) = lr * this
    weight_decay: float = 0.1
    warmup_steps: int = 50
    min_lr_ratio: float = 0.01
    grad_clip: float = 0.1
    prob_mask: float = 0.5  # first prompt: the mask with this probability ...
    prob_box: float = 0.5  # ... else a box with this probability, else one click
    correction_rounds: int = 3  # corrective clicks after a box/click, and on a corrected frame
    prob_correct_frame: float = 0.5  # a random later frame gets corrective clicks
    freeze: tuple[str, ...] = ()
    amp: str = "auto"
    seed: int = 0
    workers: int = 0
    max_steps_per_epoch: int | None = None
    val_frames: int = 16  # frames of each validation sequence, from its first
    log_every: int = 10
    loss: LossWeights = field(default_factory=LossWeights)
    augment: ClipAugment = field(default_factory=ClipAugment)

    def __post_init__(self) -> None:
        self.freeze = check_freeze(self.freeze)
        check_amp(self.amp)
        check_at_least_one(self, ("epochs", "max_objects", "val_frames"))
        if self.clip_frames < 2:
            raise ValueError(f"clip_frames must be at least 2, got {self.clip_frames}")
        for name in ("prob_mask", "prob_box", "prob_correct_frame"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.correction_rounds < 0 or self.warmup_steps < 0:
            raise ValueError("correction_rounds and warmup_steps must not be negative")

    def to_dict(self) -> dict:
        return asdict(self)


def trained_parts_here(config: VideoTrainConfig) -> tuple[str, ...]:
    """Parts this run trains: the memory parts and the image path's unfrozen parts."""
    return tuple(p for p in IMAGE_PATH_PARTS if p not in config.freeze) + MEMORY_PARTS


def parameter_groups(model: nn.Module, config: VideoTrainConfig) -> list[dict]:
    """AdamW groups over the trained parts (`parts.decay_groups`; frozen ones get requires_grad
    False), the image path at lr * image_lr_scale."""
    return decay_groups(model, trained_parts_here(config), config.lr, config.weight_decay,
                        lambda part: part in IMAGE_PATH_PARTS, config.image_lr_scale)


@dataclass
class ClipResult:
    """loss: the step's loss (None without targets' loss); terms: mean loss terms; ious: [T, K]
    IoU of the tracked mask (at the input size) with the target, per frame and object."""

    loss: torch.Tensor | None
    terms: dict[str, float]
    ious: torch.Tensor


class VideoTrainer(EpochRun):
    """Trains a SAM2Model's memory (and, unless frozen, image path) on clips; see the module
    docstring.

    Args:
      model: the model, on its device.
      train_data: a clip dataset (`segapp.training.video_data`).
      config: the recipe.
      out_dir: where checkpoints and logs go.
      val_data: a VideoFolderClips with val=True (validation J per epoch), or None.
      config_name: the model config, written into the checkpoints' metadata.
      prior_parts: parts that carried trained weights before this run (from the --init
        checkpoint; () from scratch); the written `trained_parts` is their union with this run's.
      recipe_extra: more recipe facts for the metadata (data folders, init checkpoint).
    """

    log_fields = LOG_FIELDS
    val_field = "val_j"

    def __init__(self, model, train_data, config: VideoTrainConfig, out_dir: str | Path, val_data=None,
                 config_name: str = "", prior_parts: tuple[str, ...] = (), recipe_extra: dict | None = None) -> None:
        self.set_up(model, train_data, config, out_dir, val_data, config_name, recipe_extra, parameter_groups,
                    len(train_data), "clips")
        self.prior_parts = tuple(prior_parts)
        self.tracker = Tracker(model)

    # ------------------------------------------------------------------------- one clip
    def _autocast(self):
        return autocast(self.autocast_dtype, self.device)

    def generator(self, step: int) -> torch.Generator:
        """The prompt sampler of step `step`, seeded by (seed, step): a resumed run draws the same."""
        return step_generator(self.config.seed, step, self.device)

    def _features(self, frames: torch.Tensor) -> list[FrameFeatures]:
        """[T, 3, S, S] -> each frame's features (the decoder's skip projections applied, as
        SAM2Model.forward_image does, outside no_grad so that they train with the decoder)."""
        m = self.model
        frozen = "image_encoder" in self.config.freeze or not torch.is_grad_enabled()
        with torch.no_grad() if frozen else contextlib.nullcontext():
            out = m.image_encoder(frames)
        fpn = list(out.backbone_fpn)
        if m.use_high_res_features_in_sam:
            fpn[0] = m.mask_decoder.conv_s0(fpn[0])
            fpn[1] = m.mask_decoder.conv_s1(fpn[1])
        high = fpn[:-1][-2:] if m.use_high_res_features_in_sam else []
        top, pos = fpn[-1], out.vision_pos_enc[-1]
        return [FrameFeatures(top[t: t + 1], pos[t: t + 1], [f[t: t + 1] for f in high]) for t in range(len(frames))]

    def _round_loss(self, out: StepOutput, targets: torch.Tensor):
        """The image trainer's loss of one decoder output against targets [K, S, S]."""
        size = (self.image_size, self.image_size)
        logits = F.interpolate(out.multimasks, size=size, mode="bilinear", align_corners=False)
        return multimask_loss(logits, out.iou_pred, out.object_score_logits, targets[:, None], self.config.loss)

    def _corrections(self, feats: FrameFeatures, pix: torch.Tensor, out: StepOutput, targets: torch.Tensor,
                     points, is_init: bool, generator: torch.Generator, losses: list) -> StepOutput:
        """`correction_rounds` corrective clicks after `out` (added to `points`), each with the
        previous low-res logits (clamped, detached) as mask input; appends each round's loss."""
        for _ in range(self.config.correction_rounds):
            pred = out.high_res_masks[:, 0].detach() > 0
            xy, lab = P.corrective_clicks(targets, pred, generator)
            points = (xy, lab) if points is None else (torch.cat([points[0], xy], 1), torch.cat([points[1], lab], 1))
            prev = out.pred_masks.detach().clamp(-LOW_RES_LOGIT_CLAMP, LOW_RES_LOGIT_CLAMP)
            out = self.tracker.predict(feats, pix, points, None, is_init, prev_mask_logits=prev)
            losses.append(self._round_loss(out, targets))
        return out

    def run_clip(self, clip: Clip, generator: torch.Generator, prompt: str | None = None,
                 correct_frame: int | None = -1) -> ClipResult:
        """Track a clip from a first-frame prompt and compute the loss of every frame.

        prompt: "mask", "box", "point" or None (drawn with the config's probabilities);
        correct_frame: the later frame with corrective clicks, None for none, -1 to draw it.
        """
        cfg, tracker, model = self.config, self.tracker, self.model
        frames = clip.frames.to(self.device, non_blocking=True)
        targets = clip.masks.to(self.device, non_blocking=True)  # [T, K, S, S]
        num_frames, num_obj = targets.shape[:2]
        if prompt is None:
            r = torch.rand(2, generator=generator, device=self.device).tolist()
            prompt = "mask" if r[0] < cfg.prob_mask else ("box" if r[1] < cfg.prob_box else "point")
        if correct_frame == -1:
            r = torch.rand(2, generator=generator, device=self.device).tolist()
            correct_frame = 1 + int(r[1] * (num_frames - 1)) if r[0] < cfg.prob_correct_frame else None
        frame_losses: list[list] = []
        ious = []
        with self._autocast():
            feats = self._features(frames)
            # Frame 0: the conditioning frame.
            losses: list = []
            if prompt == "mask":
                out = tracker.predict(feats[0], feats[0].top.expand(num_obj, -1, -1, -1), None,
                                      targets[0][:, None].float(), is_init_cond=True)
            else:
                points = (P.box_prompts(targets[0], generator) if prompt == "box"
                          else P.point_prompts(targets[0], generator))
                pix = tracker.no_memory(feats[0], num_obj)
                out = tracker.predict(feats[0], pix, points, None, is_init_cond=True)
                losses.append(self._round_loss(out, targets[0]))
                out = self._corrections(feats[0], pix, out, targets[0], points, True, generator, losses)
            frame_losses.append(losses)
            mem, maskmem_pos = tracker.encode_memory(feats[0], out.high_res_masks, out.object_score_logits,
                                                     from_points=False)
            ious.append(mask_iou(out.high_res_masks.detach(), targets[0][:, None])[:, 0])
            # Each object's memory, kept on the autograd graph (no storage device, no pruning).
            objects = [ObjectTrack(k) for k in range(num_obj)]
            for k, obj in enumerate(objects):
                obj.remember(0, out.for_object(k, mem), conditioning=True)
            # Frames 1..T-1: the tracking step.
            for t in range(1, num_frames):
                selections = [select_memory(model, t, obj.cond, obj.non_cond, num_frames, reverse=False)
                              for obj in objects]
                pix = tracker.condition(feats[t], selections, num_frames, maskmem_pos)
                out = tracker.predict(feats[t], pix, None, None, is_init_cond=False)
                losses = [self._round_loss(out, targets[t])]
                if t == correct_frame:
                    out = self._corrections(feats[t], pix, out, targets[t], None, False, generator, losses)
                frame_losses.append(losses)
                mem, _ = tracker.encode_memory(feats[t], out.high_res_masks, out.object_score_logits,
                                               from_points=False)
                ious.append(mask_iou(out.high_res_masks.detach(), targets[t][:, None])[:, 0])
                for k, obj in enumerate(objects):
                    obj.remember(t, out.for_object(k, mem), conditioning=False)
        counted = [fl for fl in frame_losses if fl]
        loss = torch.stack([torch.stack([r.total for r in fl]).mean() for fl in counted]).mean()
        terms = {k: float(np.mean([np.mean([getattr(r, k).detach().item() for r in fl]) for fl in counted]))
                 for k in ("focal", "dice", "iou", "object_score")}
        return ClipResult(loss, terms, torch.stack(ious))

    def train_step(self, clip: Clip) -> tuple[float, dict[str, float], float]:
        """One optimizer step on one clip -> (loss, terms, mean IoU of the tracked frames)."""
        self.model.train()
        # Dropout draws from torch's global generator: seeded per step, so a resumed run matches.
        torch.manual_seed(self.config.seed * 1_000_003 + self.step + 1)
        self.optimizer.zero_grad(set_to_none=True)
        result = self.run_clip(clip, self.generator(self.step))
        loss = result.loss
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {float(loss)} at step {self.step}; lower --lr")
        loss.backward()
        if self.config.grad_clip > 0:
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return float(loss.detach()), result.terms, float(result.ious[1:].mean())

    # ------------------------------------------------------------------------- epochs
    def loader(self, epoch: int):
        """The clips of `epoch`, one per step, in an order seeded by (seed, epoch)."""
        self.data.set_epoch(epoch)
        order = np.random.default_rng([self.config.seed, epoch]).permutation(len(self.data)).tolist()
        order = order[: self.steps_per_epoch]
        return torch.utils.data.DataLoader(self.data, batch_size=1, sampler=order, collate_fn=collate_clip,
                                           num_workers=self.config.workers,
                                           pin_memory=self.device.type == "cuda",
                                           persistent_workers=False)

    @torch.no_grad()
    def validate(self) -> float | None:
        """Mean J (mask IoU at the input size) over the tracked frames of the validation
        sequences, tracked from the first frame's mask as in semi-supervised VOS."""
        if self.val_data is None:
            return None
        self.model.eval()
        try:
            values = []
            for i in range(len(self.val_data)):
                clip = self.val_data.clip(i)
                if clip is None:
                    continue
                result = self.run_clip(clip, self.generator(0), prompt="mask", correct_frame=None)
                values.append(float(result.ious[1:].mean()))
        finally:
            self.model.train()
        if not values:
            logger.warning("validation tracked no sequence")
            return None
        return float(np.mean(values))

    def fit(self, resume: bool = False) -> dict:
        """Train up to `config.epochs` epochs (continuing from last.pt with `resume`).
        Returns {"epochs", "steps", "best" (val J, or minus the training loss), "final"}."""
        self.out.mkdir(parents=True, exist_ok=True)
        if resume:
            self.load_state(self.out / LAST_NAME)
        cfg = self.config
        logger.info("training the video memory of %s at %d px: %d clips of %d frames, %d steps per epoch, "
                    "epochs %d..%d, out %s", self.config_name, self.image_size, len(self.data), cfg.clip_frames,
                    self.steps_per_epoch, self.epoch + 1, cfg.epochs, self.out)
        while self.epoch < cfg.epochs:
            epoch = self.epoch + 1
            start = time.time()
            sums: dict[str, float] = {}
            count = 0
            for i, clip in enumerate(self.loader(epoch)):
                loss, terms, train_j = self.train_step(clip)
                count += 1
                for k, v in {"loss": loss, **terms, "train_j": train_j}.items():
                    sums[k] = sums.get(k, 0.0) + v
                if (i + 1) % cfg.log_every == 0 or i + 1 == self.steps_per_epoch:
                    logger.info("epoch %d clip %d/%d loss %.4f (focal %.4f dice %.4f iou %.4f obj %.4f) "
                                "tracked IoU %.3f lr %.2e %.2f s/clip", epoch, i + 1, self.steps_per_epoch, loss,
                                terms["focal"], terms["dice"], terms["iou"], terms["object_score"], train_j,
                                self.scheduler.get_last_lr()[0], (time.time() - start) / (i + 1))
            means = {k: v / max(count, 1) for k, v in sums.items()}
            val = self.validate()
            improved = self.end_epoch(epoch, means, val, start, clips=count)
            logger.info("epoch %d done: loss %.4f, tracked IoU %.3f, val J %s%s", epoch,
                        means.get("loss", float("nan")), means.get("train_j", float("nan")),
                        "-" if val is None else f"{val:.4f}", " (best)" if improved else "")
        return self.finish()

    # ------------------------------------------------------------------------- outputs
    def trained_parts(self) -> tuple[str, ...]:
        """What the written weights carry trained: the parts trained before (prior_parts) and now."""
        return tuple(dict.fromkeys(self.prior_parts + trained_parts_here(self.config)))

    def metadata(self) -> dict[str, str]:
        return {**self.run_metadata({"stage": "video", **self.config.to_dict(), **self.recipe_extra}),
                TRAINED_PARTS_KEY: ",".join(self.trained_parts())}

    def save_state(self, path: Path) -> None:
        """Everything --resume needs, written atomically."""
        save_state(path, {
            **optimisation_state(self.model, self.optimizer, self.scheduler),
            "epoch": self.epoch,
            "step": self.step,
            "best": self.best,
            "config_name": str(self.config_name),
            "image_size": self.image_size,
            "train_config": json.dumps(self.config.to_dict(), default=str),
            "kind": "video",
        })

    def load_state(self, path: Path) -> None:
        state = read_state(path, ResumeError)
        if state.get("kind") != "video":
            raise ResumeError(f"{path} is not a video-training run (written by segapp train?)")
        check_same_model(path, state, self.image_size, self.config.freeze, ResumeError)
        restore_optimisation(state, self.model, self.optimizer, self.scheduler)
        self.epoch, self.step, self.best = int(state["epoch"]), int(state["step"]), float(state["best"])
        trim_rows(self.out / LOG_NAME, LOG_FIELDS, "epoch", self.epoch)
        logger.info("resumed from %s: %d epochs, %d steps done", path, self.epoch, self.step)
