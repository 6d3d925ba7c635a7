"""Where one-click mIoU is lost: the three multimask candidates of a click, one by one.

    python benchmarks/bench_click_candidates.py [--checkpoint PATH] [--config NAME] [--max-images N]

For every non-crowd object of shared/data/coco_tiny val2017, the click `segapp eval coco
--prompt point` uses (farthest from the boundary) is decoded with multimask output. Reported per
COCO size range: the mIoU of the candidate the IoU head picks (what `segapp eval` scores), of
each candidate always, and of the best candidate (the ceiling of any selection rule); how often
each candidate is picked and is best; how well predicted IoU follows the real IoU (Pearson r per
candidate); and how wide the picked mask is against the object, which shows whether the masks
follow the object's size or keep one size whatever was clicked. Writes
docs/benchmarks/click_candidates.md (default: the bundled model).
"""
from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch

import segapp
from segapp.evaluation.clicks import clicks_to_prompt, first_click
from segapp.evaluation.coco import area_range, iter_images, load_coco_instances

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared/data/coco_tiny"
OUT = ROOT / "docs/benchmarks/click_candidates.md"
SIZES = ("small", "medium", "large")


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else 0.0


def extent(mask: np.ndarray) -> float:
    """The longer side of the mask's bounding box, in pixels (0 for an empty mask)."""
    ys, xs = np.nonzero(mask)
    return float(max(xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)) if len(xs) else 0.0


def measure(predictor, annotations: Path, images: Path, max_images: int | None) -> dict[str, np.ndarray]:
    dataset = load_coco_instances(annotations, images)
    pred_iou, real_iou, picked_extent, gt_extent, sizes = [], [], [], [], []
    for n, (_, image, pairs) in enumerate(iter_images(dataset)):
        if max_images is not None and n >= max_images:
            break
        predictor.set_image(image)
        for _, gt in pairs:
            points, labels = clicks_to_prompt([first_click(gt)])
            masks, scores, _ = predictor.predict(point_coords=points, point_labels=labels, multimask_output=True)
            masks = masks.astype(bool)
            pred_iou.append(scores)
            real_iou.append([iou(m, gt) for m in masks])
            picked_extent.append(extent(masks[int(np.argmax(scores))]))
            gt_extent.append(extent(gt))
            sizes.append(area_range(float(gt.sum())))
    return {"pred": np.array(pred_iou), "real": np.array(real_iou), "picked_extent": np.array(picked_extent),
            "gt_extent": np.array(gt_extent), "sizes": np.array(sizes)}


def report(r: dict[str, np.ndarray], title: str, command: str, seconds: float) -> str:
    pred, real, sizes = r["pred"], r["real"], r["sizes"]
    rows = np.arange(len(real))
    picked = real[rows, pred.argmax(1)]
    best = real.max(1)
    groups = [("all", np.ones(len(real), bool))] + [(s, sizes == s) for s in SIZES]

    def cells(values: np.ndarray) -> str:
        return " | ".join(f"{values[m].mean():.3f}" if m.any() else "" for _, m in groups)

    head = " | ".join(f"{name} ({int(m.sum())})" for name, m in groups)
    lines = [
        "## One click: the three candidates (issue 14)",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {title}. Machine: {platform.machine()}, "
        f"torch {torch.__version__}, {seconds:.0f} s. Command: `{command}`.",
        "",
        f"{len(real)} objects of coco_tiny val2017, one click each (the click of `segapp eval coco --prompt point`), "
        "multimask output; mIoU by COCO size range.",
        "",
        f"| mask | {head} |",
        "|---|" + "---:|" * len(groups),
        f"| the IoU head's pick (what `segapp eval` scores) | {cells(picked)} |",
    ]
    lines += [f"| candidate {k} always | {cells(real[:, k])} |" for k in range(real.shape[1])]
    lines += [f"| the best candidate (ceiling of any selection) | {cells(best)} |", ""]
    counts_picked = np.bincount(pred.argmax(1), minlength=real.shape[1])
    counts_best = np.bincount(real.argmax(1), minlength=real.shape[1])
    corr = [float(np.corrcoef(pred[:, k], real[:, k])[0, 1]) for k in range(real.shape[1])]
    ratio = r["picked_extent"] / np.maximum(r["gt_extent"], 1)
    lines += [
        "| candidate | picked | best | mean predicted IoU | mean real IoU | Pearson r (predicted, real) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {k} | {counts_picked[k]} | {counts_best[k]} | {pred[:, k].mean():.3f} | {real[:, k].mean():.3f} | "
              f"{corr[k]:.2f} |" for k in range(real.shape[1])]
    lines += [
        "",
        "Width of the picked mask (longer side of its box) over the object's, median per size range: "
        + ", ".join(f"{s} {np.median(ratio[sizes == s]):.2f}" for s in SIZES if (sizes == s).any())
        + "; the picked mask's width in pixels: median "
        + f"{np.median(r['picked_extent']):.0f} (objects: {np.median(r['gt_extent']):.0f}).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="segapp_small")
    parser.add_argument("--checkpoint", default=None, help="default: the bundled weights")
    parser.add_argument("--annotations", type=Path, default=DATA / "annotations/instances_val2017.json")
    parser.add_argument("--images", type=Path, default=DATA / "val2017")
    parser.add_argument("--max-images", type=int, default=None)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    model = segapp.build_model(args.config, args.checkpoint) if args.checkpoint else segapp.build_model(args.config)
    start = time.perf_counter()
    results = measure(segapp.ImagePredictor(model), args.annotations, args.images, args.max_images)
    title = f"{args.config}, " + (f"checkpoint {args.checkpoint}" if args.checkpoint else "the bundled weights")
    command = "python benchmarks/bench_click_candidates.py" + (f" --checkpoint {args.checkpoint}" if args.checkpoint else "")
    text = report(results, title, command, time.perf_counter() - start)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
