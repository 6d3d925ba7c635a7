"""Box prompts: segapp vs the reference on the plain box path, and the bundled model's box zoom.

    python benchmarks/bench_box.py [--repeats 5] [--boxes 10] [--out docs/benchmarks/box.md]

1. sam2.1_hiera_t at 1024, the same random official-format checkpoint in segapp and in the
   reference, one process, runs alternating: set_image on a 1200x1800 image, the first box after
   the model was built, and steady-state single boxes (median).
2. The bundled segapp_small with box zoom (`box_zoom: 3.0`; the reference has no counterpart):
   the first set_image and the first box of a freshly built model, steady-state set_image and
   single boxes (medians), and the boxes of an image in one predict call (per box).
3. The whole `segapp eval coco --prompt box` run on coco_tiny val2017 (804 boxes) with the
   bundled model, as a user runs it: wall time, its CPU time and the mIoU it reports.
4. OpenMP's wait policy (OMP_WAIT_POLICY), which the `segapp` command sets to PASSIVE: one
   segapp_small encoder pass in a fresh process under each policy, alternating.

The machine's load average is recorded before and after each part: on a shared CPU, other jobs
change absolute times, so compare columns of one run. This script sets OMP_WAIT_POLICY=PASSIVE
(unless set) as the `segapp` command does.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported, as `segapp` does

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from common import REPO, machine, median, write_report  # noqa: E402

import segapp  # noqa: E402  (before the reference, which needs the torchvision stand-in)
import reference  # noqa: E402

COCO = reference.DATA / "coco_tiny"
ENCODE_ONCE = """
import os, statistics, time, torch, segapp
model = segapp.build_model("segapp_small")
x = torch.randn(1, 3, 384, 384)
with torch.inference_mode():
    model.embed_images(x)
    times = []
    for _ in range({n}):
        start = time.perf_counter(); model.embed_images(x); times.append(time.perf_counter() - start)
print(statistics.median(times))
"""


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.1f} (1 min) / {five:.1f} (5 min)"


def clock(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def coco_image_and_boxes(count: int) -> tuple[np.ndarray, np.ndarray]:
    """The coco_tiny val image with the most non-crowd boxes, and up to `count` of them (xyxy)."""
    data = json.loads((COCO / "annotations/instances_val2017.json").read_text())
    per_image: dict[int, list] = {}
    for ann in data["annotations"]:
        if not ann.get("iscrowd"):
            per_image.setdefault(ann["image_id"], []).append(ann["bbox"])
    image_id = max(per_image, key=lambda i: (len(per_image[i]), -i))
    name = next(im["file_name"] for im in data["images"] if im["id"] == image_id)
    image = np.asarray(Image.open(COCO / "val2017" / name).convert("RGB"))
    boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in per_image[image_id][:count]], dtype=np.float32)
    return image, boxes


def plain_box_path(repeats: int) -> tuple[dict, str, str]:
    """Part 1: reference vs segapp, sam2.1_hiera_t at 1024, box_zoom off (as the official models)."""
    reference.import_reference()  # with its torchvision stand-in
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    before = load()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = reference.make_official_checkpoint("sam2.1_hiera_t", Path(tmp) / "ckpt.pt")
        preds = {"reference": SAM2ImagePredictor(reference.build_reference_model("sam2.1_hiera_t",
                                                                                 checkpoint=str(ckpt))),
                 "segapp": segapp.ImagePredictor(segapp.build_model("sam2.1_hiera_t", ckpt, device="cpu"))}
    image = np.random.default_rng(0).integers(0, 256, (1200, 1800, 3), dtype=np.uint8)
    box = dict(box=np.array([500.0, 300.0, 1100.0, 900.0]), multimask_output=False)
    times = {name: {"set_image": [], "first box": [], "box": []} for name in preds}
    for name, pred in preds.items():  # first calls: each model's first set_image and box
        times[name]["first set_image"] = [clock(lambda: pred.set_image(image))]
        times[name]["first box"] = [clock(lambda: pred.predict(**box))]
    for _ in range(repeats):
        for name, pred in preds.items():
            times[name]["set_image"].append(clock(lambda: pred.set_image(image)))
            times[name]["box"] += [clock(lambda: pred.predict(**box)) for _ in range(3)]
    return {name: {k: median(v) for k, v in t.items()} for name, t in times.items()}, before, load()


def zoomed_boxes(repeats: int, count: int) -> tuple[dict, int, str, str]:
    """Part 2: the bundled segapp_small with box zoom, single boxes and all boxes in one call."""
    before = load()
    image, boxes = coco_image_and_boxes(count)
    out: dict[str, float] = {}
    start = time.perf_counter()
    pred = segapp.ImagePredictor(segapp.build_model("segapp_small"))
    out["build"] = time.perf_counter() - start
    out["first set_image"] = clock(lambda: pred.set_image(image))
    out["first box"] = clock(lambda: pred.predict(box=boxes[0], multimask_output=False))
    sets, singles, batched = [], [], []
    for _ in range(repeats):
        sets.append(clock(lambda: pred.set_image(image)))
        singles += [clock(lambda: pred.predict(box=b, multimask_output=False)) for b in boxes]
        batched.append(clock(lambda: pred.predict(box=boxes, multimask_output=False)) / len(boxes))
    out["set_image"], out["box"], out["box in a batch"] = median(sets), median(singles), median(batched)
    return out, len(boxes), before, load()


def eval_run() -> dict:
    """Part 3: `segapp eval coco --prompt box` with the bundled model, in its own process."""
    before = load()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["segapp", "eval", "coco", "--images", str(COCO / "val2017"),
               "--annotations", str(COCO / "annotations/instances_val2017.json"), "--prompt", "box",
               "--model", "segapp_small", "--no-progress", "--out", tmp]
        cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        wall = time.perf_counter() - start
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        report = json.loads((Path(tmp) / "report.json").read_text())
    overall = report["metrics"]["overall"]
    return {"wall": wall, "cpu": (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime),
            "miou": overall["miou"][0], "count": overall["count"], "before": before, "after": load()}


def wait_policies(rounds: int) -> dict:
    """Part 4: one segapp_small encoder pass (median of 5) in fresh processes, per policy
    ("unset": OpenMP's own default, which spins a while before sleeping)."""
    results: dict[str, list[float]] = {"PASSIVE": [], "unset": [], "ACTIVE": []}
    before = load()
    for _ in range(rounds):
        for policy in results:
            env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
            if policy != "unset":
                env["OMP_WAIT_POLICY"] = policy
            out = subprocess.run([sys.executable, "-c", ENCODE_ONCE.format(n=5)], env=env, check=True,
                                 capture_output=True, text=True)
            results[policy].append(float(out.stdout.strip().splitlines()[-1]))
    return {"times": results, "before": before, "after": load()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--boxes", type=int, default=10, help="boxes of one coco_tiny image for part 2")
    parser.add_argument("--policy-rounds", type=int, default=3)
    parser.add_argument("--skip-eval", action="store_true", help="leave out part 3 (the whole eval run)")
    parser.add_argument("--out", type=Path, default=REPO / "docs/benchmarks/box.md")
    args = parser.parse_args()

    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    plain, plain_before, plain_after = plain_box_path(args.repeats)
    zoom, n_boxes, zoom_before, zoom_after = zoomed_boxes(args.repeats, args.boxes)
    ev = None if args.skip_eval else eval_run()
    pol = wait_policies(args.policy_rounds)

    r, s = plain["reference"], plain["segapp"]
    cmd = f"python benchmarks/bench_box.py --repeats {args.repeats} --boxes {args.boxes}"
    lines = [
        "## Box prompts (issue 19)",
        "",
        f"Run {started}. Machine: {machine()}, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}. "
        f"Command: `{cmd}`.",
        "The CPU is shared with other developers' jobs; load averages are given per part. Medians.",
        "",
        "### Plain box path: sam2.1_hiera_t at 1024, random official-format checkpoint",
        "",
        "Image 1200x1800, one box, single-mask output; reference and segapp alternate in one process. "
        f"Load {plain_before} before, {plain_after} after.",
        "",
        "| step | reference (s) | segapp (s) | ratio segapp/reference |",
        "|---|---:|---:|---:|",
    ]
    for key, label in (("first set_image", "first set_image (model just built)"),
                       ("first box", "first box"), ("set_image", "set_image (steady)"),
                       ("box", "box (steady: decoder + mask at image size)")):
        lines.append(f"| {label} | {r[key]:.4f} | {s[key]:.4f} | {s[key] / r[key]:.2f} |")
    lines += [
        "",
        "### Bundled segapp_small with box zoom (no reference counterpart)",
        "",
        f"The coco_tiny val image with the most boxes, {n_boxes} of its boxes; each box is answered from a crop "
        "3 box sides wide, resized to 384 and encoded on its own. "
        f"Load {zoom_before} before, {zoom_after} after.",
        "",
        "| step | segapp_small (s) |",
        "|---|---:|",
        f"| build_model (bundled weights) | {zoom['build']:.3f} |",
        f"| first set_image | {zoom['first set_image']:.3f} |",
        f"| first box (zoomed) | {zoom['first box']:.3f} |",
        f"| set_image (steady) | {zoom['set_image']:.3f} |",
        f"| box, one per predict call (steady) | {zoom['box']:.3f} |",
        f"| box, {n_boxes} in one predict call (per box) | {zoom['box in a batch']:.3f} |",
        "",
    ]
    if ev is not None:
        lines += [
            "### `segapp eval coco --prompt box`, bundled model, coco_tiny val2017",
            "",
            f"`segapp eval coco --images ../shared/data/coco_tiny/val2017 --annotations "
            f"../shared/data/coco_tiny/annotations/instances_val2017.json --prompt box --model segapp_small`: "
            f"{ev['count']} boxes in **{ev['wall']:.0f} s** wall ({ev['cpu']:.0f} s CPU), mIoU {ev['miou']:.4f}. "
            f"Load {ev['before']} before, {ev['after']} after.",
            "",
        ]
    lines += [
        "### OpenMP wait policy",
        "",
        "One segapp_small encoder pass at 384 (median of 5, after a warm-up) in a fresh process per "
        f"policy, {args.policy_rounds} rounds alternating. Load {pol['before']} before, {pol['after']} after.",
        "",
        "| OMP_WAIT_POLICY | encoder pass (s), median of rounds | rounds |",
        "|---|---:|---|",
        *(f"| {label} | {median(pol['times'][key]):.3f} | {', '.join(f'{t:.3f}' for t in pol['times'][key])} |"
          for key, label in (("PASSIVE", "PASSIVE (what `segapp` sets)"), ("unset", "unset (OpenMP's default)"),
                             ("ACTIVE", "ACTIVE (spin)"))),
        "",
    ]
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
