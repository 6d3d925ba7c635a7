"""The outputs of a training run that goes by epochs (`segapp train`, `train-video`): after each
epoch best.safetensors (when the epoch is the best so far), a log.csv row and last.pt; at the
end final.safetensors.

"Best" is the validation metric, or minus the mean training loss without validation. The log
row is written before last.pt: a run stopped in between redoes the epoch on --resume, and
`run_log.trim_rows` drops the row.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

from segapp.checkpoint import save_safetensors
from segapp.training.run_log import append_row

LAST_NAME, BEST_NAME, FINAL_NAME, LOG_NAME = "last.pt", "best.safetensors", "final.safetensors", "log.csv"


class EpochOutputs:
    """Mixin of the epoch trainers. The trainer has `model`, `out`, `epoch`, `step`, `best`,
    `scheduler`, `metadata()` and `save_state(path)`; it names its log columns (`log_fields`)
    and its validation metric's column (`val_field`)."""

    log_fields: tuple[str, ...] = ()
    val_field = "val"

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
