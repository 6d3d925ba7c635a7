"""Image predictor: segapp vs the reference, side by side in one process.

    python benchmarks/bench_image.py [--repeats 5] [--out docs/benchmarks/image.md]

Both load the same random official-format sam2.1_hiera_t checkpoint. Runs alternate
(reference, segapp, reference, ...) so that load on the machine hits both alike.
Measured: set_image at 1024 on a 1200x1800 photo-sized image, and one click (decoder +
upsampling the three masks to image resolution + thresholding).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from common import REPO, machine, median, peak_rss_mib, peak_rss_reset, timed, write_report

import segapp  # noqa: E402  (before the reference, which needs the torchvision stand-in)
import reference  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--config", default="sam2.1_hiera_t")
    parser.add_argument("--out", type=Path, default=REPO / "docs/benchmarks/image.md")
    args = parser.parse_args()

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = reference.make_official_checkpoint(args.config, Path(tmp) / "ckpt.pt")
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        ref = SAM2ImagePredictor(reference.build_reference_model(args.config, checkpoint=str(ckpt)))
        seg = segapp.ImagePredictor(segapp.build_model(args.config, ckpt, device="cpu"))

    image = np.random.default_rng(0).integers(0, 256, (1200, 1800, 3), dtype=np.uint8)
    click = dict(point_coords=np.array([[900.0, 600.0]]), point_labels=np.array([1]))
    results = {}
    for name, pred in (("reference", ref), ("segapp", seg)):
        pred.set_image(image)  # warm-up
        pred.predict(**click)
    set_times = {"reference": [], "segapp": []}
    click_times = {"reference": [], "segapp": []}
    peaks = {"reference": 0.0, "segapp": 0.0}
    for _ in range(args.repeats):
        for name, pred in (("reference", ref), ("segapp", seg)):
            peak_rss_reset()
            set_times[name] += timed(lambda: pred.set_image(image), 1)
            click_times[name] += timed(lambda: pred.predict(**click), 3)
            peaks[name] = max(peaks[name], peak_rss_mib())
    for name in set_times:
        results[name] = (median(set_times[name]), median(click_times[name]), peaks[name])

    r, s = results["reference"], results["segapp"]
    lines = [
        "## Image predictor (issue 2)",
        "",
        f"Machine: {machine()}. Command: `python benchmarks/bench_image.py --repeats {args.repeats}`.",
        f"Config {args.config} at 1024, random official-format checkpoint, image 1200x1800, fp32 on CPU;",
        "reference and segapp alternate in one process; medians over the repeats (clicks: 3 per repeat).",
        "",
        "| step | reference (s) | segapp (s) | ratio segapp/reference |",
        "|---|---|---|---|",
        f"| set_image | {r[0]:.3f} | {s[0]:.3f} | {s[0] / r[0]:.2f} |",
        f"| click (decoder + masks at image size) | {r[1]:.4f} | {s[1]:.4f} | {s[1] / r[1]:.2f} |",
        f"| peak RSS during set_image + clicks (MiB, process) | {r[2]:.0f} | {s[2]:.0f} | |",
        "",
        "Peak RSS is the process high-water mark since the last reset, so it includes both loaded models.",
        "",
    ]
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
