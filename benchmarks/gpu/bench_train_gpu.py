"""`segapp train` speed on the lent GPU (issue 12): bench_train.py's "now" rows, on any device.

    python benchmarks/gpu/bench_train_gpu.py --data .gpu/data/coco/coco128 [--steps 6] [--warmup 2]
        [--configs segapp_small,sam2.1_hiera_t] [--device cuda] [--image-size S] [--json out.json]

Same measurement as benchmarks/bench_train.py (a `Trainer` at `segapp train`'s defaults: batch 4,
8 instances per image, 7 correction rounds, its data-loading workers; time from asking the loader
for a batch to the end of the optimizer step, the device synchronised; medians after --warmup
steps): segapp_small from random weights with strong augmentation, sam2.1_hiera_t from random
weights (speed does not depend on the values) with the image encoder frozen and light
augmentation. Only this code is run: the "before" side (the code before issue 12, a git worktree)
is not carried to the device. --data is a COCO folder as benchmarks/gpu/pack_data.py writes it
(images/ and instances.json).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/common.py
from common import time_train_steps  # noqa: E402


def bench(config: str, data_dir: Path, device: str, steps: int, warmup: int, image_size: int | None) -> dict:
    from segapp.build import build_model

    torch.manual_seed(0)
    model = build_model(config, device=device, random_init=True, image_size=image_size)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    # segapp_small from random weights; the others as `segapp train --init CHECKPOINT --freeze image_encoder`
    trainer, times, samples, instances = time_train_steps(model, data_dir / "instances.json", data_dir / "images",
                                                          config != "segapp_small", steps, warmup, sync)
    step = statistics.median(times)
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
    return {"config": config, "device": f"{device} ({name}, torch {torch.__version__})",
            "image_size": model.image_size, "workers": trainer.workers,
            "s_per_step": round(step, 4), "steps_per_s": round(1 / step, 3),
            "samples_per_s": round(statistics.median(n / t for n, t in zip(samples, times)), 2),
            "instances_per_step": round(statistics.mean(instances), 1), "steps": steps, "warmup": warmup,
            "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20) if device.startswith("cuda") else None,
            "before": "not run: the code before issue 12 (a git worktree) is not carried to the device"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--configs", default="segapp_small,sam2.1_hiera_t")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--image-size", type=int, help="input side of sam2.1_hiera_t (default: its 1024)")
    parser.add_argument("--json", type=Path, help="write the rows here too")
    args = parser.parse_args()
    rows = []
    for config in args.configs.split(","):
        size = args.image_size if config != "segapp_small" else None
        try:
            rows.append(bench(config, args.data, args.device, args.steps, args.warmup, size))
        except Exception as err:  # noqa: BLE001  (report the row as failed, keep the others)
            rows.append({"config": config, "error": f"{type(err).__name__}: {err}"})
        print(json.dumps(rows[-1]), flush=True)
        if args.json:  # after each row: a run stopped early keeps what it measured
            args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
