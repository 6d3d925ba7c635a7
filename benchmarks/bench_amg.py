"""Automatic mask generator: segapp vs the reference, side by side in one process.

    python benchmarks/bench_amg.py [--points 16 32] [--repeats 3 2] [--out docs/benchmarks/amg.md]

Both load the same random official-format sam2.1_hiera_t checkpoint and segment a 768x1024
copy of truck.jpg with the official default settings; runs alternate (reference, segapp,
reference, ...) so that load on the machine hits both alike. Reported: median wall time
of generate() and of its part after set_image (the image embedding is the same work on
both sides), their ratios, the number of masks, and the peak RSS of the process.

With random weights no mask passes the default pred_iou_thresh, so the default rows
measure embedding + decoding; `--loose` adds a row with both filters off, where every
mask goes on to the stability score, boxes, NMS and encoding.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import torch

from common import REPO, machine, median, peak_rss_mib, peak_rss_reset

import segapp  # noqa: E402  (before the reference, which needs the torchvision stand-in)
import reference  # noqa: E402

IMAGE_HW = (768, 1024)


def load_image(name: str):
    bgr = cv2.imread(str(reference.DATA / "sam2_examples/images" / name))
    if bgr is None:
        raise SystemExit(f"image {name} not found in {reference.DATA / 'sam2_examples/images'}")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return cv2.resize(rgb, IMAGE_HW[::-1], interpolation=cv2.INTER_AREA)


def timed_generate(generator, image) -> tuple[float, float, int, float]:
    """(total s, s spent in set_image, masks, peak RSS MiB) of one generate() call."""
    predictor = generator.predictor
    spent = [0.0]
    original = predictor.set_image

    def set_image(img):
        start = time.perf_counter()
        original(img)
        spent[0] += time.perf_counter() - start

    predictor.set_image = set_image  # instance attribute: the class is untouched
    try:
        peak_rss_reset()
        start = time.perf_counter()
        masks = generator.generate(image)
        total = time.perf_counter() - start
    finally:
        del predictor.set_image
    return total, spent[0], len(masks), peak_rss_mib()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, nargs="+", default=[16, 32], help="points_per_side values")
    parser.add_argument("--repeats", type=int, nargs="+", default=[3, 2],
                        help="repeats for each --points value (the last one is reused)")
    parser.add_argument("--loose", action="store_true",
                        help="add a row at the first --points with pred_iou_thresh = stability_score_thresh = 0")
    parser.add_argument("--image", default="truck.jpg")
    parser.add_argument("--config", default="sam2.1_hiera_t")
    parser.add_argument("--out", type=Path, default=REPO / "docs/benchmarks/amg.md")
    args = parser.parse_args()

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = reference.make_official_checkpoint(args.config, Path(tmp) / "ckpt.pt")
        from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

        ref_model = reference.build_reference_model(args.config, checkpoint=str(ckpt))
        seg_model = segapp.build_model(args.config, ckpt, device="cpu")
    image = load_image(args.image)
    builders = {"reference": lambda **kw: SAM2AutomaticMaskGenerator(ref_model, **kw),
                "segapp": lambda **kw: segapp.AutomaticMaskGenerator(seg_model, **kw)}

    for build in builders.values():  # warm-up: first-call allocations and kernel selection
        build(points_per_side=2).generate(image)

    settings = [(p, {}, args.repeats[min(i, len(args.repeats) - 1)]) for i, p in enumerate(args.points)]
    if args.loose:
        settings.append((args.points[0], dict(pred_iou_thresh=0.0, stability_score_thresh=0.0),
                         args.repeats[0]))
    rows = []
    for points, extra, repeats in settings:
        runs = {name: [] for name in builders}
        for _ in range(repeats):
            for name, build in builders.items():
                runs[name].append(timed_generate(build(points_per_side=points, **extra), image))
                print(f"{points}x{points} {extra or 'defaults'} {name}: {runs[name][-1][0]:.1f} s, "
                      f"{runs[name][-1][2]} masks", flush=True)
        stats = {name: (median([r[0] for r in rs]), median([r[0] - r[1] for r in rs]),
                        rs[0][2], max(r[3] for r in rs)) for name, rs in runs.items()}
        rows.append((points, extra, repeats, stats))

    command = "python benchmarks/bench_amg.py --points " + " ".join(map(str, args.points)) + \
        " --repeats " + " ".join(map(str, args.repeats)) + (" --loose" if args.loose else "")
    lines = [
        "## Automatic mask generator (issue 4)",
        "",
        f"Machine: {machine()}; the machine is shared with other jobs, so absolute times vary",
        "between runs: compare the columns of one row. Command: `" + command + "`.",
        f"Config {args.config} at 1024, random official-format checkpoint, {args.image} resized to",
        f"{IMAGE_HW[0]}x{IMAGE_HW[1]}, fp32 on CPU, default settings unless stated; reference and segapp",
        "alternate in one process; medians over the repeats. \"after set_image\" is generate() minus",
        "the time in set_image (decoding, filtering, NMS, encoding).",
        "",
        "| points | settings | runs | reference total (s) | segapp total (s) | ratio | reference after set_image (s) "
        "| segapp after set_image (s) | ratio | masks (ref / segapp) | peak RSS MiB (ref / segapp) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for points, extra, repeats, stats in rows:
        r, s = stats["reference"], stats["segapp"]
        label = ", ".join(f"{k}={v}" for k, v in extra.items()) or "defaults"
        lines.append(f"| {points}x{points} | {label} | {repeats} | {r[0]:.1f} | {s[0]:.1f} | {s[0] / r[0]:.2f} "
                     f"| {r[1]:.1f} | {s[1]:.1f} | {s[1] / r[1]:.2f} | {r[2]} / {s[2]} | {r[3]:.0f} / {s[3]:.0f} |")
    lines += [
        "",
        "Peak RSS is the process high-water mark during one generate() call (reset before each), so",
        "it includes both loaded models.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
