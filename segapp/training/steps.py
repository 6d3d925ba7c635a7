"""What every trainer's optimizer step shares (`segapp train`, `train-video`, `pretrain`).

- the learning-rate schedule: linear warm-up, then cosine decay per optimizer step
  (`warmup_cosine`, `cosine_scheduler`), and `follow_schedule` after a resume;
- the autocast mode: bf16 on CUDA for `amp="auto"`, on any device for `"bf16"`, none for `"off"`;
- the per-step random generator, seeded by (seed, step), so that a resumed run draws the same
  prompts and masks as an uninterrupted one;
- the checks their recipes share (`check_amp`, `check_at_least_one`).
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable

import torch

AMP_MODES = ("auto", "bf16", "off")
# Mixes the seed into the per-step generator's seed (seed * this + step): a prime, so that
# neighbouring seeds do not share steps.
STEP_SEED_FACTOR = 1_000_003


def warmup_cosine(warmup: int, total: int, min_ratio: float) -> Callable[[int], float]:
    """lr factor at optimizer step s: linear warm-up to 1 over `warmup` steps, then cosine to
    `min_ratio` at `total` steps (and `min_ratio` after).

    A plain function, not a callable object, on purpose: LambdaLR saves a callable object's
    attributes in its state_dict and restores them on load, so `--resume --epochs N` would go on
    with the old run's length; a function is rebuilt from this run's settings instead.
    """
    total = max(total, 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        span = max(total - warmup, 1)
        progress = min((step - warmup) / span, 1.0)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def cosine_scheduler(optimizer: torch.optim.Optimizer, warmup_steps: int, total: int,
                     min_lr_ratio: float) -> torch.optim.lr_scheduler.LambdaLR:
    """The run's LambdaLR over `total` optimizer steps; the warm-up takes at most half of them."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(min(warmup_steps, total // 2), total, min_lr_ratio))


def follow_schedule(scheduler: torch.optim.lr_scheduler.LambdaLR) -> None:
    """After loading a scheduler's state: set each group's lr from this run's schedule at the
    loaded step (the same value when the schedule is unchanged; `--epochs` may change on resume)."""
    for group, base, factor in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * factor(scheduler.last_epoch)


def check_at_least_one(config, names: tuple[str, ...]) -> None:
    """ValueError naming the first of the fields `names` of `config` that is below 1."""
    for name in names:
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be at least 1, got {getattr(config, name)}")


def check_amp(amp: str) -> None:
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be one of {AMP_MODES}, got {amp!r}")


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """bf16 for amp="bf16", and for "auto" on CUDA; None (fp32) otherwise."""
    use_bf16 = amp == "bf16" or (amp == "auto" and device.type == "cuda")
    return torch.bfloat16 if use_bf16 else None


def autocast(dtype: torch.dtype | None, device: torch.device):
    """torch.autocast to `dtype` on `device`, or a context that does nothing for None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def step_generator(seed: int, step: int, device: torch.device | str) -> torch.Generator:
    """The random generator of optimizer step `step`, seeded by (seed, step)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed * STEP_SEED_FACTOR + step)
    return gen
