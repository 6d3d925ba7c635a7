"""The lent-GPU pipeline, within a deadline: issue 12's training speed, then the bundled model's
training on the GPU (MAE pretraining of the trunk, click-first image training, video memory).

    python benchmarks/gpu/pipeline.py --deadline EPOCH_S --out $OUT [--data .gpu/data] [--smoke]

Run by benchmarks/gpu/run.sh (which installs segapp on the device first). Every stage runs the
`segapp` command line (`segapp pretrain`, `segapp train`, `segapp train-video`, `segapp eval`) in a
process of its own. A stage's time share is a fraction of the time left (STAGES); its epochs are
planned from a probe (the same command for PROBE_STEPS steps, thrown away), cut into chunks
(--max-steps-per-epoch) so that each writes its weights and validation, and it is stopped at its
share + SLACK_S (what it saved so far is kept). After each stage $OUT gets results.json (timings,
plans, validation), logs.tar.gz (every log.csv and console) and the stage's weights:
pretrained.safetensors, image.safetensors, segapp_small_gpu.safetensors (the final weights).
--smoke: the same on the CPU with a few images, steps and frames (a couple of minutes).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import re
import signal
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

COCO_TRAIN = ("coco128", "coco_tiny", "coco_tiny50", "coco_extra")
STAGES = {"pretrain": 25, "train": 40, "video": 25, "eval": 10}  # shares of the time after the bench
SLACK_S = 20  # a stage may overrun its share by this much before it is stopped
MARGIN_S = 15  # kept free before the deadline for the last copies
BENCH_CAP_S = 100
# the `segapp` command of this Python (its console script may not be on PATH on the device)
SEGAPP = [sys.executable, "-c", "import sys; from segapp.cli import main; sys.argv[0] = 'segapp'; sys.exit(main())"]


class Pipeline:
    def __init__(self, args) -> None:
        self.args, self.smoke = args, args.smoke
        self.data, self.out, self.work = args.data.resolve(), args.out.resolve(), args.work.resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        self.results: dict = {"smoke": self.smoke, "deadline_s": round(args.deadline - time.time()),
                              "config": args.config, "stages": {}}
        self.workers = "1" if self.smoke else str(min(8, max(1, (os.cpu_count() or 2) - 2)))

    # ----------------------------------------------------------------------------- helpers
    def left(self) -> float:
        return self.args.deadline - MARGIN_S - time.time()

    def log(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')} left {self.left():5.0f}s] {text}", flush=True)

    def run(self, name: str, cmd: list[str], timeout: float) -> tuple[int, float]:
        """Run `cmd` (console to work/<name>.log), stopped after `timeout` s -> (status, seconds)."""
        shown = ["segapp", *cmd[len(SEGAPP):]] if cmd[:len(SEGAPP)] == SEGAPP else cmd
        self.log(f"{name}: {' '.join(shown)} (timeout {timeout:.0f} s)")
        start = time.time()
        with open(self.work / f"{name}.log", "w") as console:
            proc = subprocess.Popen(cmd, stdout=console, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                status = proc.wait(timeout=max(1.0, timeout))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGTERM)  # the command and its data-loading workers
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                status = "timeout"
        seconds = time.time() - start
        tail = (self.work / f"{name}.log").read_text(errors="replace").strip().splitlines()[-4:]
        self.log(f"{name}: exit {status} after {seconds:.0f} s\n    " + "\n    ".join(tail))
        return status, seconds

    def save(self, *weights: tuple[Path, str]) -> None:
        """results.json, logs.tar.gz and `weights` (source, name) into $OUT, each written atomically."""
        for src, name in weights:
            if src.is_file():
                shutil.copyfile(src, self.out / f".{name}")
                os.replace(self.out / f".{name}", self.out / name)
        (self.out / ".results.json").write_text(json.dumps(self.results, indent=1))
        os.replace(self.out / ".results.json", self.out / "results.json")
        with tarfile.open(self.out / ".logs.tar.gz", "w:gz") as tar:
            for path in sorted(self.work.rglob("*")):
                if path.suffix in (".log", ".csv", ".json") and path.is_file():
                    tar.add(path, arcname=str(path.relative_to(self.work)))
        os.replace(self.out / ".logs.tar.gz", self.out / "logs.tar.gz")

    def share(self, stage: str) -> float:
        later = list(STAGES)[list(STAGES).index(stage):]
        return self.left() * STAGES[stage] / sum(STAGES[s] for s in later)

    @staticmethod
    def rows(path: Path) -> list[dict]:
        return list(csv.DictReader(path.open())) if path.is_file() else []

    def plan(self, seconds_per_step: float, overhead: float, share: float, steps_per_epoch: int,
             val_s: float) -> dict:
        """Epochs and steps per epoch (chunk) for a run of `share` seconds; at least 2 validations
        when there is time, at most ~6."""
        budget = max(0.0, share - overhead)
        total = max(1, int(budget / seconds_per_step))
        chunk = min(steps_per_epoch, max(1 if self.smoke else 10, total // 4))
        epochs = max(1, int(budget / (chunk * seconds_per_step + val_s)))
        while epochs > 6 and chunk < steps_per_epoch:
            chunk = min(steps_per_epoch, chunk * 2)
            epochs = max(1, int(budget / (chunk * seconds_per_step + val_s)))
        if self.smoke:
            chunk, epochs = 1, min(epochs, 2)
        return {"epochs": epochs, "chunk": chunk, "steps": epochs * chunk,
                "s_per_step_probe": round(seconds_per_step, 4), "overhead_s": round(overhead, 1)}

    # ----------------------------------------------------------------------------- stages
    def bench(self) -> None:
        out = self.work / "bench.json"
        cmd = [sys.executable, "benchmarks/gpu/bench_train_gpu.py", "--data", str(self.data / "coco/coco128"),
               "--json", str(out)]
        cmd += ["--steps", "1", "--warmup", "0", "--image-size", "256"] if self.smoke else ["--steps", "6"]
        status, seconds = self.run("bench", cmd, min(BENCH_CAP_S, 0.2 * self.left()))
        rows = json.loads(out.read_text()) if out.is_file() else []
        self.results["stages"]["bench"] = {"status": status, "seconds": round(seconds, 1), "rows": rows}
        self.save()

    def coco_args(self, val: bool, val_prompt: str = "point") -> list[str]:
        args = []
        for name in COCO_TRAIN:
            args += ["--annotations", str(self.data / "coco" / name / "instances.json"),
                     "--images", str(self.data / "coco" / name / "images")]
        if val:
            args += ["--val-annotations", str(self.data / "coco/val20/instances.json"),
                     "--val-images", str(self.data / "coco/val20/images"), "--val-prompt", val_prompt,
                     "--val-max-images", "2" if self.smoke else "20"]
        return args

    def pretrain(self) -> Path | None:
        share, start = self.share("pretrain"), time.time()
        image_dirs = [str(self.data / "coco" / name / "images") for name in COCO_TRAIN]
        batch = 2 if self.smoke else 16
        base = [*SEGAPP, "pretrain", "--images", *image_dirs, "--videos", str(self.data / "davis_train"),
                "--config", self.args.config, "--batch-size", str(batch), "--workers", self.workers, "--seed", "0"]
        if self.smoke:
            base += ["--max-images", "4"]
        probe_steps = 1 if self.smoke else 12
        status, seconds = self.run("pretrain_probe", base + ["--epochs", "1", "--max-steps-per-epoch",
                                                             str(probe_steps), "--log-every", "1",
                                                             "--out", str(self.work / "pretrain_probe")],
                                   share / 3)
        rows = self.rows(self.work / "pretrain_probe" / "log.csv")
        record: dict = {"share_s": round(share), "probe": {"status": status, "seconds": round(seconds, 1)}}
        self.results["stages"]["pretrain"] = record
        if not rows:
            record["error"] = "the probe logged no step (see logs.tar.gz: pretrain_probe.log)"
            self.save()
            return None
        rates = [float(r["samples_per_s"]) for r in rows[len(rows) // 2:]]  # after the first steps
        step_s = batch / (sum(rates) / len(rates))
        images = 4 if self.smoke else sum(1 for d in image_dirs for p in Path(d).iterdir()) + sum(
            1 for _ in (self.data / "davis_train" / "JPEGImages").glob("*/*.jpg"))
        plan = self.plan(step_s, max(5.0, seconds - probe_steps * step_s), share - (time.time() - start),
                         math.ceil(images / batch), 0.0)
        # pretrain cannot change its epochs on resume: whole-run chunks, a checkpoint every chunk
        cmd = base + ["--epochs", str(plan["epochs"]), "--max-steps-per-epoch", str(plan["chunk"]),
                      "--warmup-steps", str(max(1, min(200, plan["steps"] // 10))),
                      "--log-every", "1" if self.smoke else "10", "--out", str(self.work / "pretrain")]
        status, seconds = self.run("pretrain", cmd, share - (time.time() - start) + SLACK_S)
        rows = self.rows(self.work / "pretrain" / "log.csv")
        record.update(plan=plan, status=status, seconds=round(seconds, 1), images=images,
                      steps_done=int(rows[-1]["step"]) if rows else 0,
                      loss_first=float(rows[0]["loss"]) if rows else None,
                      loss_last=float(rows[-1]["loss"]) if rows else None,
                      samples_per_s=float(rows[-1]["samples_per_s"]) if rows else None)
        weights = self.work / "pretrain" / "pretrained.safetensors"
        self.save((weights, "pretrained.safetensors"))
        return weights if weights.is_file() else None

    def epochs_stage(self, stage: str, base: list[str], steps_per_epoch: int, val_args: list[str],
                     val_s: float, metric: str, weights_name: str) -> Path | None:
        """A `segapp train` or `train-video` stage: probe, plan, run; -> its best weights."""
        share, start = self.share(stage), time.time()
        probe_steps = 1 if self.smoke else 8
        status, seconds = self.run(f"{stage}_probe", base + ["--epochs", "1", "--max-steps-per-epoch",
                                                            str(probe_steps), "--log-every", "1",
                                                            "--out", str(self.work / f"{stage}_probe")],
                                   share / 3)
        rows = self.rows(self.work / f"{stage}_probe" / "log.csv")
        record: dict = {"share_s": round(share), "probe": {"status": status, "seconds": round(seconds, 1)}}
        self.results["stages"][stage] = record
        if not rows:
            record["error"] = f"the probe logged no epoch (see logs.tar.gz: {stage}_probe.log)"
            self.save()
            return None
        step_s = float(rows[0]["seconds"]) / probe_steps  # the first steps' warm-up included
        # the console's per-step times ("... 0.31 s/step", "... 0.52 s/clip"), after the warm-up
        console = (self.work / f"{stage}_probe.log").read_text(errors="replace")
        times = [float(t) for t in re.findall(r"([0-9.]+) s/(?:step|clip)\b", console)][2:]
        if times:
            step_s = min(step_s, statistics.median(times))
        plan = self.plan(step_s, max(5.0, seconds - float(rows[0]["seconds"])), share - (time.time() - start),
                         steps_per_epoch, val_s)
        cmd = base + val_args + ["--epochs", str(plan["epochs"]), "--max-steps-per-epoch", str(plan["chunk"]),
                                 "--warmup-steps", str(max(1, min(30, plan["steps"] // 5))),
                                 "--log-every", "1" if self.smoke else "10", "--out", str(self.work / stage)]
        status, seconds = self.run(stage, cmd, share - (time.time() - start) + SLACK_S)
        rows = self.rows(self.work / stage / "log.csv")
        record.update(plan=plan, status=status, seconds=round(seconds, 1), epochs_done=len(rows),
                      log=[{k: r[k] for k in ("epoch", "step", "loss", metric, "seconds")} for r in rows])
        best = self.work / stage / "best.safetensors"
        self.save((best, weights_name))
        return best if best.is_file() else None

    def train(self, init: Path | None) -> Path | None:
        batch = 2 if self.smoke else int(self.args.train_batch)
        base = [*SEGAPP, "train", *self.coco_args(False), "--config", self.args.config,
                "--augment", "strong", "--batch-size", str(batch), "--instances-per-image", "8",
                "--weight-decay", "0.05", "--grad-clip", "1.0", "--correction-rounds", "2", "--prob-box", "0.3",
                "--loss-weights", "1,1,1,1", "--lr", "1e-3", "--seed", "3", "--workers", self.workers]
        if init is not None:
            base += ["--init", str(init)]
        if self.smoke:
            base += ["--max-images", "4"]
        images = 4 if self.smoke else 278
        self.results.setdefault("notes", []).append(
            "train: from the MAE trunk" if init is not None else "train: from random weights (no MAE trunk)")
        return self.epochs_stage("train", base, math.ceil(images / batch), self.coco_args(True)[-8:],
                                 2.0 if self.smoke else 6.0, "val_miou", "image.safetensors")

    def video(self, init: Path | None) -> Path | None:
        coco = self.data / "coco/coco128"
        base = [*SEGAPP, "train-video", "--videos", str(self.data / "davis_train"),
                "--annotations", str(coco / "instances.json"), "--images", str(coco / "images"),
                "--config", self.args.config, "--freeze", "image_encoder", "--image-lr-scale", "0.2",
                "--clip-frames", "3" if self.smoke else "6", "--max-objects", "2", "--correction-rounds", "1",
                "--prob-correct-frame", "0.3", "--loss-weights", "2,1,1,1", "--grad-clip", "1.0", "--lr", "5e-4",
                "--seed", "9", "--workers", self.workers]
        if init is not None:
            base += ["--init", str(init)]
        if self.smoke:
            base += ["--max-images", "2"]
        clips = 24 + (2 if self.smoke else 128)
        val = ["--val-videos", str(self.data / "davis_val"), "--val-frames", "3" if self.smoke else "12"]
        return self.epochs_stage("video", base, clips, val, 10.0 if self.smoke else 8.0, "val_j",
                                 "segapp_small_gpu.safetensors")

    def evaluate(self, final: Path | None) -> None:
        """The final weights beside the bundled ones on the carried validation data (same sizes)."""
        record: dict = {}
        self.results["stages"]["eval"] = record
        val = self.data / "coco/val20"
        models = {"bundled": []} if final is None else {"gpu": ["--checkpoint", str(final)], "bundled": []}
        jobs = []
        for model, ckpt in models.items():
            for prompt in ("point", "box"):
                jobs.append((f"eval_{model}_{prompt}", [*SEGAPP, "eval", "coco", "--model", self.args.config,
                             *ckpt, "--images", str(val / "images"), "--annotations", str(val / "instances.json"),
                             "--prompt", prompt, "--no-progress"] + (["--max-images", "2"] if self.smoke else [])))
            jobs.append((f"eval_{model}_video", [*SEGAPP, "eval", "video", "--model", self.args.config, *ckpt,
                         "--videos", str(self.data / "davis_val"), "--no-progress"]
                         + (["--sequences", "dog-agility"] if self.smoke else [])))
        for name, cmd in jobs:
            if self.left() < 15:
                record[name] = "skipped: no time left"
                continue
            status, seconds = self.run(name, cmd + ["--out", str(self.work / name)], self.left())
            report = self.work / name / "report.json"
            metrics = json.loads(report.read_text()).get("metrics", {}) if report.is_file() else {}
            record[name] = {"status": status, "seconds": round(seconds, 1),
                            "overall": metrics.get("overall", {k: v for k, v in metrics.items()
                                                               if not isinstance(v, (list, dict))})}
            self.save()


    def summary(self) -> None:
        """The numbers that matter, last on the console (the run tool returns its tail)."""
        stages, lines = self.results["stages"], []
        for row in stages.get("bench", {}).get("rows", []):
            lines.append(f"bench {row['config']}: " + (row.get("error") or
                         f"{row['s_per_step']} s/step, {row['samples_per_s']} samples/s, workers {row['workers']}"))
        for stage, metric in (("pretrain", "loss_last"), ("train", "val_miou"), ("video", "val_j")):
            rec = stages.get(stage, {})
            last = rec.get("log", [{}])[-1].get(metric) if "log" in rec else rec.get(metric)
            lines.append(f"{stage}: status {rec.get('status')}, {rec.get('seconds')} s, plan {rec.get('plan')}, "
                         f"{metric} {last} {rec.get('error', '')}")
        for name, rec in stages.get("eval", {}).items():
            overall = rec.get("overall", {}) if isinstance(rec, dict) else {}
            lines.append(f"{name}: {overall.get('miou', overall.get('J&F', rec))}")
        print("SUMMARY\n" + "\n".join(lines), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deadline", type=float, required=True, help="end time, seconds since the epoch")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=Path(".gpu/data"))
    parser.add_argument("--work", type=Path, default=Path(os.environ.get("WORK", "/tmp/segapp_gpu_runs")),
                        help="the runs' folders (default: $WORK or /tmp/segapp_gpu_runs); emptied first")
    parser.add_argument("--config", default="segapp_small")
    parser.add_argument("--train-batch", default="8", help="segapp train --batch-size on the device")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    pipe = Pipeline(args)
    started = time.time()
    pipe.bench()
    trunk = pipe.pretrain()
    image = pipe.train(trunk)
    final = pipe.video(image)
    pipe.evaluate(final)
    pipe.results["total_s"] = round(time.time() - started, 1)
    pipe.save()
    pipe.summary()
    pipe.log(f"done: {sorted(p.name for p in pipe.out.iterdir())}")


if __name__ == "__main__":
    main()
