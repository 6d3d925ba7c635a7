"""`segapp segment` vs a plain loop over the reference SAM2ImagePredictor, on the same folder.

    python benchmarks/bench_segment.py [--images 8] [--batch-size 4] [--repeats 2]
                                       [--out docs/benchmarks/segment.md]

The folder: the first N images of the shared COCO sample (val2017), with the COCO boxes of
each image as prompts (one object per non-crowd annotation). Both sides use the same random
official-format sam2.1_hiera_t checkpoint at 1024 and write the same outputs: an
instance-id PNG per image and COCO RLE results.

- reference: for each image, decode (PIL), `set_image`, `predict(box=all boxes,
  multimask_output=False)`, paint the id map, write the PNG, RLE-encode the masks; one
  JSON at the end. The model is built before the clock starts.
- segapp: `segapp segment FOLDER --prompts ANNOTATIONS --checkpoint CKPT` in this process
  (reader and writer threads, batched encoder), fresh output folder each repeat. Its clock
  includes building the model; the build time is measured on its own and taken out for the
  steady-state rate.
Runs alternate (reference, segapp, ...) so that load on the machine hits both alike.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from common import REPO, machine, median, write_report

import segapp  # noqa: E402,F401  (before the reference, which needs the torchvision stand-in)
import reference  # noqa: E402


def make_folder(root: Path, n: int) -> tuple[Path, Path, int]:
    """Copy n COCO images with at least one box into root/images; write their annotations."""
    coco_dir = reference.DATA / "coco_tiny"
    coco = json.loads((coco_dir / "annotations" / "instances_val2017.json").read_text())
    boxes = {}
    for a in coco["annotations"]:
        if not a.get("iscrowd"):
            boxes.setdefault(a["image_id"], []).append(a)
    images = [img for img in sorted(coco["images"], key=lambda i: i["id"]) if img["id"] in boxes][:n]
    folder = root / "images"
    folder.mkdir()
    for img in images:
        shutil.copy(coco_dir / "val2017" / img["file_name"], folder / img["file_name"])
    keep = {img["id"] for img in images}
    subset = {"images": images, "categories": coco["categories"],
              "annotations": [a for a in coco["annotations"] if a["image_id"] in keep]}
    ann = root / "annotations.json"
    ann.write_text(json.dumps(subset))
    return folder, ann, sum(len(boxes[i]) for i in keep)


def reference_loop(predictor, folder: Path, ann_file: Path, out: Path) -> float:
    """The plain loop a user would write around the reference predictor; returns seconds."""
    import cv2
    from PIL import Image
    from pycocotools import mask as mask_utils

    coco = json.loads(ann_file.read_text())
    out.mkdir(parents=True)
    start = time.perf_counter()
    results = []
    for img in coco["images"]:
        anns = sorted((a for a in coco["annotations"] if a["image_id"] == img["id"] and not a.get("iscrowd")),
                      key=lambda a: a["id"])
        image = np.array(Image.open(folder / img["file_name"]).convert("RGB"))
        predictor.set_image(image)
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)])
        masks, scores, _ = predictor.predict(box=boxes, multimask_output=False)
        masks = masks.reshape(len(anns), *image.shape[:2]) > 0.5
        scores = scores.reshape(len(anns))
        id_map = np.zeros(image.shape[:2], np.uint16)
        for k in np.argsort([-m.sum() for m in masks], kind="stable"):
            id_map[masks[k]] = k + 1
        cv2.imwrite(str(out / (Path(img["file_name"]).stem + ".png")),
                    id_map.astype(np.uint8 if len(anns) <= 255 else np.uint16))
        for k, a in enumerate(anns):
            rle = mask_utils.encode(np.asfortranarray(id_map == k + 1, dtype=np.uint8))
            results.append({"image_id": img["id"], "category_id": a["category_id"], "score": float(scores[k]),
                            "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}})
    (out / "coco_results.json").write_text(json.dumps(results))
    return time.perf_counter() - start


def segapp_run(folder: Path, ann_file: Path, ckpt: Path, out: Path, batch_size: int, config: str) -> float:
    from segapp.cli import main as cli

    start = time.perf_counter()
    rc = cli(["segment", str(folder), "--out", str(out), "--prompts", str(ann_file), "--model", config,
              "--checkpoint", str(ckpt), "--device", "cpu", "--batch-size", str(batch_size), "--no-progress"])
    took = time.perf_counter() - start
    if rc != 0:
        raise SystemExit(f"segapp segment failed with exit code {rc}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--config", default="sam2.1_hiera_t")
    parser.add_argument("--out", type=Path, default=REPO / "docs/benchmarks/segment.md")
    args = parser.parse_args()

    from segapp.batch.config import ModelSpec

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder, ann_file, n_boxes = make_folder(tmp, args.images)
        ckpt = reference.make_official_checkpoint(args.config, tmp / "ckpt.pt")
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        start = time.perf_counter()
        ref = SAM2ImagePredictor(reference.build_reference_model(args.config, checkpoint=str(ckpt)))
        ref_build = time.perf_counter() - start
        start = time.perf_counter()
        ModelSpec(args.config, str(ckpt), "cpu").build()
        seg_build = time.perf_counter() - start

        ref_times, seg_times = [], []
        for r in range(args.repeats):
            ref_times.append(reference_loop(ref, folder, ann_file, tmp / f"ref{r}"))
            seg_times.append(segapp_run(folder, ann_file, ckpt, tmp / f"seg{r}", args.batch_size, args.config))
            print(f"repeat {r}: reference {ref_times[-1]:.1f} s, segapp segment {seg_times[-1]:.1f} s", flush=True)

    n = args.images
    ref_t, seg_t = median(ref_times), median(seg_times)
    seg_steady = max(seg_t - seg_build, 1e-9)
    lines = [
        "## `segapp segment` (issue 4)",
        "",
        f"Machine: {machine()}. Command: `python benchmarks/bench_segment.py --images {n} "
        f"--batch-size {args.batch_size} --repeats {args.repeats}`.",
        f"{n} COCO val2017 images ({n_boxes} box prompts from their annotations), {args.config} at 1024, "
        "random official-format checkpoint, fp32 on CPU. Both write an instance-id PNG per image and "
        "COCO RLE results. Medians over the repeats; runs alternate.",
        "",
        "| | reference loop | segapp segment | ratio (segapp/reference rate) |",
        "|---|---|---|---|",
        f"| steady state (model already built): images/s | {n / ref_t:.3f} | {n / seg_steady:.3f} | "
        f"{(n / seg_steady) / (n / ref_t):.2f} |",
        f"| end to end incl. model build: images/s | {n / (ref_t + ref_build):.3f} | {n / seg_t:.3f} | "
        f"{(n / seg_t) / (n / (ref_t + ref_build)):.2f} |",
        f"| model build + checkpoint load (s) | {ref_build:.1f} | {seg_build:.1f} | |",
        "",
        f"Load average at the end: {os.getloadavg()[0]:.1f} (other jobs share the machine; numbers are noisy).",
        "On CPU the image encoder takes nearly all the time, so overlapping decoding and writing with it "
        "and batching it gain little; the gains are meant for a GPU, where the model is no longer the "
        "bottleneck.",
        "",
    ]
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
