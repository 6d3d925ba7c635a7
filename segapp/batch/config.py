"""What a `segapp segment` run is given and what it returns: the model to build, the run's
options, and the summary of a finished run. Plain data, the same for both engines (the Ray
engine ships these to its actors)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Without a checkpoint (test configs) the random weights are drawn from this seed, so that every
# process of every run (resumes, Ray actors) builds the same model.
RANDOM_WEIGHTS_SEED = 0


@dataclass(frozen=True)
class ModelSpec:
    """What every engine needs to build the same model: config name or path, checkpoint, device."""

    name: str
    checkpoint: str | None
    device: str | None = None

    def build(self):
        """The model, by `segapp.build_model` (random weights from RANDOM_WEIGHTS_SEED)."""
        import segapp

        return segapp.build_model(self.name, checkpoint=self.checkpoint, device=self.device,
                                  seed=RANDOM_WEIGHTS_SEED)


@dataclass(frozen=True)
class Options:
    """formats: subset of segapp.batch.outputs.FORMATS. batch_size: inputs per chunk (images per
    encoder batch). The rest configure segment-everything (AutomaticMaskGenerator)."""

    formats: tuple[str, ...] = ("png", "coco")
    batch_size: int = 4
    points_per_side: int = 32
    pred_iou_thresh: float = 0.8
    stability_score_thresh: float = 0.95
    resume: bool = True
    progress: bool = True
    # videos: the memory cross-attention kernels in bfloat16 (VideoPredictor attention_dtype)
    bf16_attention: bool = False
    # videos without prompts: segment everything every this many frames and track everything
    # (VideoAutoTracker); None: on the first frame only
    track_every: int | None = None


@dataclass
class RunSummary:
    """A finished run: every input's record, how many an earlier run had done, the seconds taken."""

    records: list[dict[str, Any]] = field(default_factory=list)
    already_done: int = 0
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(1 for r in self.records if r.get("status") == status)


__all__ = ["ModelSpec", "Options", "RunSummary", "RANDOM_WEIGHTS_SEED"]
