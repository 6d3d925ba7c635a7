"""`segapp train` speed: steps/s and samples/s of the training loop, this code beside an older one.

    git worktree add /tmp/segapp_base 5a9b706          # the code before issue 12
    python benchmarks/bench_train.py [--base /tmp/segapp_base] [--steps 4] [--warmup 1]
                                     [--configs segapp_small,sam2.1_hiera_t]
                                     [--out docs/benchmarks/train.md]

Each side runs in its own subprocess with PYTHONPATH at its checkout, so both import their own
`segapp`; what runs is what `segapp train` runs at its defaults: a `Trainer` with the default
`TrainConfig` of that code (its data-loading workers, augmentation, loss, 7 correction rounds,
batch 4, 8 instances per image) over `trainer.loader(epoch)` on coco128
(../shared/data/coco128), timed from asking the loader for a batch to the end of the optimizer
step, so data loading counts unless workers hide it. Rows:
- segapp_small from random weights, `strong` augmentation (as `segapp train` from scratch);
- sam2.1_hiera_t from a random official-format checkpoint (tests/reference.py builds it),
  `--freeze image_encoder`, `light` augmentation (as `segapp train --init ...`).
The first --warmup steps of each side are not counted; medians over the next --steps.
Sides alternate per config (base, then this code) so that load on the machine hits both.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import REPO, machine, median, time_train_steps, write_report

DATA = REPO.parent / "shared" / "data" / "coco128"
CONFIGS = ("segapp_small", "sam2.1_hiera_t")


def worker(config: str, checkpoint: str | None, steps: int, warmup: int, threads: int | None) -> None:
    """Run in a subprocess: time `warmup + steps` training steps of `config`; print JSON."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    from segapp.build import build_model

    torch.manual_seed(0)
    if checkpoint:
        model = build_model(config, checkpoint, device="cpu")
    else:
        model = build_model(config, device="cpu", random_init=True)
    trainer, times, samples, instances = time_train_steps(
        model, DATA / "annotations" / "instances_train2017.json", DATA / "train2017", bool(checkpoint), steps, warmup)
    import segapp

    if not Path(segapp.__file__).resolve().is_relative_to(Path.cwd().resolve()):
        raise RuntimeError(f"imported {segapp.__file__}, not the code in {Path.cwd()}")
    workers = trainer.workers if hasattr(trainer, "workers") else trainer.config.workers  # the base has none
    print(json.dumps({"times": times, "samples": samples, "instances": instances, "workers": workers,
                      "threads": torch.get_num_threads(), "image_size": model.image_size}))


def run_side(root: Path, config: str, checkpoint: str | None, args) -> dict:
    env = {**os.environ, "PYTHONPATH": str(root)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", config, "--steps", str(args.steps),
           "--warmup", str(args.warmup)]
    if checkpoint:
        cmd += ["--checkpoint", checkpoint]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    load_before = os.getloadavg()[0]
    done = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True, check=False)
    if done.returncode in (-9, 137):  # SIGKILL: the kernel's out-of-memory killer, as a rule
        return {"error": "killed (out of memory)", "load": (load_before, os.getloadavg()[0])}
    if done.returncode:
        raise RuntimeError(f"{root} {config} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["load"] = (load_before, os.getloadavg()[0])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, default=Path("/tmp/segapp_base"),
                        help="checkout of the older code (a git worktree)")
    parser.add_argument("--base-commit", default="5a9b706", help="its commit, for the report")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, help="torch threads in the training process (default: torch's)")
    parser.add_argument("--skip-base", default="", metavar="CONFIGS",
                        help="configs to run with this code only (e.g. sam2.1_hiera_t: the code before "
                             "issue 12 needs about 20 GB at 1024 px and was killed on a 23 GB machine)")
    parser.add_argument("--note", default="", help="a sentence on the machine's load, for the report")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "train.md")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.checkpoint, args.steps, args.warmup, args.threads)
        return
    if not (args.base / "segapp").is_dir():
        raise SystemExit(f"no older checkout at {args.base}: git worktree add {args.base} {args.base_commit}")
    # The installed (editable) segapp maps segapp.configs to this checkout's configs/; without a
    # segapp/configs of its own, the older code would compose today's configs (which it may not
    # understand: segapp_small gained click_map_sigma). Point it at its own.
    own_configs = args.base / "segapp" / "configs"
    if not own_configs.exists():
        own_configs.symlink_to("../configs")
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for config in args.configs.split(","):
            checkpoint = None
            if config != "segapp_small":
                import segapp  # noqa: F401  (before the reference, which needs the torchvision stand-in)
                import reference

                checkpoint = str(reference.make_official_checkpoint(config, Path(tmp) / f"{config}.pt"))
            sides = {}
            if config in args.skip_base.split(","):
                sides["before"] = {"error": "not run (--skip-base)", "load": (os.getloadavg()[0],) * 2}
            else:
                sides["before"] = run_side(args.base.resolve(), config, checkpoint, args)
            sides["now"] = run_side(REPO, config, checkpoint, args)
            rows.append((config, sides))
            print(config, json.dumps(sides), flush=True)
    lines = [
        "## Training speed (issue 12)",
        "",
        f"Run {when}. Machine: {machine()}. Command: `python benchmarks/bench_train.py --steps {args.steps} "
        f"--warmup {args.warmup}{f' --threads {args.threads}' if args.threads else ''}`"
        f" (before: commit {args.base_commit} in a git worktree).",
        "`segapp train` at each code's defaults on coco128 (batch 4, 8 instances per image, 7 correction "
        "rounds), on CPU; time per step from asking the data loader for a batch to the end of the "
        f"optimizer step, medians over {args.steps} steps after {args.warmup} warm-up step(s). "
        "segapp_small: random weights, strong augmentation; sam2.1_hiera_t: random official-format "
        "checkpoint, image encoder frozen, light augmentation.",
        "",
        "| config | code | data workers | s/step | steps/s | samples/s | instances/step | load avg (start, end) | speed-up |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for config, sides in rows:
        rate = {}
        for name, r in sides.items():
            if "error" in r:
                lines.append(f"| {config} | {name} | | {r['error']} | | | | {r['load'][0]:.1f}, {r['load'][1]:.1f} | |")
                continue
            step = median(r["times"])
            rate[name] = median([n / t for n, t in zip(r["samples"], r["times"])])
            speedup = f"{rate['now'] / rate['before']:.2f}x" if name == "now" and "before" in rate else ""
            lines.append(f"| {config} | {name} | {r['workers']} | {step:.2f} | {1 / step:.3f} | {rate[name]:.2f} | "
                         f"{sum(r['instances']) / len(r['instances']):.0f} | {r['load'][0]:.1f}, {r['load'][1]:.1f} "
                         f"| {speedup} |")
    lines += ["", args.note or "The CPU was shared with other developers' jobs during the run: compare "
              "the rows of one config, and expect a quiet re-run to differ.", ""]
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
