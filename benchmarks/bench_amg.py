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
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import cv2
import torch

from common import REPO, machine, median, peak_rss_mib, peak_rss_reset, write_report

import segapp  # noqa: E402  (before the reference, which needs the torchvision stand-in)
import reference  # noqa: E402

IMAGE_HW = (768, 1024)


def load_image(name: str):
    bgr = cv2.imread(str(reference.DATA / "sam2_examples/images" / name))
    if bgr is None:
        raise SystemExit(f"image {name} not found in {reference.DATA / 'sam2_examples/images'}")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return cv2.resize(rgb, IMAGE_HW[::-1], interpolation=cv2.INTER_AREA)


@contextmanager
def stopwatch(obj, name: str, spent: list[float]):
    """Add the time spent in obj.<name>(...) to spent[0], by shadowing it on the instance."""
    original = getattr(obj, name)

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - start

    setattr(obj, name, timed)
    try:
        yield
    finally:
        delattr(obj, name)


def decoder_of(name: str, generator):
    """(object, method) that runs the mask decoder on each side, to time it."""
    if name == "segapp":
        return generator.predictor, "decode_low_res"
    return generator.predictor.model.sam_mask_decoder, "forward"


def timed_generate(name: str, generator, image) -> dict:
    """One generate() call: total, set_image and decoder seconds, masks, peak RSS MiB."""
    embed, decode = [0.0], [0.0]
    with stopwatch(generator.predictor, "set_image", embed), stopwatch(*decoder_of(name, generator), decode):
        peak_rss_reset()
        start = time.perf_counter()
        masks = generator.generate(image)
        total = time.perf_counter() - start
    return dict(total=total, after=total - embed[0], decoder=decode[0], masks=len(masks), rss=peak_rss_mib())


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

    started, load_before = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), os.getloadavg()[1]
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
                run = timed_generate(name, build(points_per_side=points, **extra), image)
                runs[name].append(run)
                print(f"{points}x{points} {extra or 'defaults'} {name}: " +
                      ", ".join(f"{k} {v:.1f}" for k, v in run.items()), flush=True)
        stats = {name: {key: (max if key == "rss" else median)([r[key] for r in rs]) for key in rs[0]}
                 for name, rs in runs.items()}
        rows.append((points, extra, repeats, stats))

    command = "python benchmarks/bench_amg.py --points " + " ".join(map(str, args.points)) + \
        " --repeats " + " ".join(map(str, args.repeats)) + (" --loose" if args.loose else "")
    load_after = os.getloadavg()[1]
    lines = [
        "## Automatic mask generator (issue 4)",
        "",
        f"Run {started}. Machine: {machine()}; shared with other jobs (5-minute load average",
        f"{load_before:.1f} at the start, {load_after:.1f} at the end), so absolute times vary between",
        "runs: compare the columns of one row. Command: `" + command + "`.",
        f"Config {args.config} at 1024, random official-format checkpoint, {args.image} resized to",
        f"{IMAGE_HW[0]}x{IMAGE_HW[1]}, fp32 on CPU, default settings unless stated; reference and segapp",
        "alternate in one process; medians over the repeats. \"after set_image\" is generate() minus",
        "the time in set_image (decoding, filtering, NMS, encoding); \"decoder\" is the time inside the",
        "mask decoder (segapp: decode_low_res; reference: its SAM mask decoder's forward), part of it.",
        "",
        "| points | settings | runs | total (s) ref / segapp | ratio | after set_image (s) ref / segapp | ratio "
        "| decoder (s) ref / segapp | masks ref / segapp | peak RSS MiB ref / segapp |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for points, extra, repeats, stats in rows:
        r, s = stats["reference"], stats["segapp"]
        label = ", ".join(f"{k}={v}" for k, v in extra.items()) or "defaults"
        lines.append(f"| {points}x{points} | {label} | {repeats} | {r['total']:.1f} / {s['total']:.1f} "
                     f"| {s['total'] / r['total']:.2f} | {r['after']:.1f} / {s['after']:.1f} "
                     f"| {s['after'] / r['after']:.2f} | {r['decoder']:.1f} / {s['decoder']:.1f} "
                     f"| {r['masks']:.0f} / {s['masks']:.0f} | {r['rss']:.0f} / {s['rss']:.0f} |")
    lines += [
        "",
        "Peak RSS is the process high-water mark during one generate() call (reset before each), so",
        "it includes both loaded models.",
        "",
    ]
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
