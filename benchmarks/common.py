"""Shared helpers for the side-by-side benchmarks (segapp vs the reference sam2==1.1.0)."""
from __future__ import annotations

import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # tests/reference.py: the reference and random checkpoints


def peak_rss_reset() -> None:
    """Reset the kernel's peak-RSS counter of this process (Linux: VmHWM)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def median(xs) -> float:
    return statistics.median(xs)


def machine() -> str:
    import torch

    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads), Python {platform.python_version()}")


def write_report(lines: list[str], out: Path) -> None:
    """Print a benchmark's markdown section and write it to `out`."""
    text = "\n".join(lines)
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


def time_train_steps(model, annotations: Path, images: Path, frozen_encoder: bool, steps: int, warmup: int,
                     sync=lambda: None) -> tuple[object, list[float], list[int], list[int]]:
    """Time `warmup + steps` steps of a `segapp train` Trainer at its defaults on a COCO folder:
    from random weights with strong augmentation, or (`frozen_encoder`) as `segapp train --init
    CHECKPOINT --freeze image_encoder` with light augmentation. Each time runs from asking the
    loader for a batch to the end of the optimizer step (`sync` waits for the device). Imports
    segapp inside, so that a subprocess with another checkout on PYTHONPATH measures that code.
    Returns (trainer, seconds per measured step, images per step, instances per step)."""
    from segapp.training import AugmentConfig, CocoInstanceDataset, TrainConfig, Trainer

    train_config = (TrainConfig(freeze=("image_encoder",), augment=AugmentConfig.light()) if frozen_encoder
                    else TrainConfig())
    data = CocoInstanceDataset(annotations, images, model.image_size, instances_per_image=train_config.instances_per_image,
                               augment=train_config.augment, seed=train_config.seed)
    times, samples, instances = [], [], []
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(model, data, train_config, out)
        it = iter(trainer.loader(1))
        for i in range(warmup + steps):
            start = time.perf_counter()
            batch = next(it)
            stats = trainer.train_step(batch)
            float(stats.loss)  # reads the loss back: waits for the step
            sync()
            if i >= warmup:
                times.append(time.perf_counter() - start)
                samples.append(batch.images.shape[0])
                instances.append(batch.masks.shape[0])
    return trainer, times, samples, instances
