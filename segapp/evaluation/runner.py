"""The evaluation loop and its outputs (report.json, per_instance.csv, mIoU-vs-clicks plot).

The loop drives any object with the SAM2ImagePredictor interface: `set_image(image)` once per
image (so its embedding is computed once and reused for every instance and click), then
`predict(...)` per prompt. `iter_evaluate` yields one `InstanceResult` at a time, so a caller
can stream results; `evaluate` collects them.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from segapp.evaluation import clicks as clicks_lib
from segapp.evaluation.coco import (AREA_RANGES, BAD_INPUT_SKIPS, MEDIUM_AREA_MAX, SMALL_AREA_MAX,
                                    CocoInstances, Skipped, iter_images)
from segapp.evaluation.metrics import NOC_THRESHOLDS, InstanceResult, breakdown, mask_iou
from segapp.evaluation.outputs import REPORT_NAME, text_table, versions, write_json


PROMPTS = ("box", "point", "clicks")
DEFAULT_CLICKS = 5
CSV_NAME, PLOT_NAME = "per_instance.csv", "miou_vs_clicks.png"
# `box` prompts: an image's boxes go to the predictor together, as many per call as keep the
# returned float32 masks (one [H, W] each) under this many pixels, at most BOX_BATCH_MAX.
BOX_BATCH_PIXELS = 1 << 24
BOX_BATCH_MAX = 32

# The protocol, as written into every report (and, in more words, in docs/evaluation.md).
PROTOCOL_RULES = {
    "instances": "annotations with iscrowd == 0 (crowd too with --include-crowd) whose mask, "
                 "decoded with pycocotools from polygons or RLE, has at least one pixel, and whose "
                 "`area` is at least --min-area",
    "box": "the annotation's bbox (XYWH -> XYXY) as the box prompt; single-mask output",
    "point": "one positive click at the integer (x, y) of the mask pixel farthest from the "
             "boundary (exact Euclidean distance transform of the mask padded with one pixel of "
             "background; first maximum in row-major order); multimask output, the mask with the "
             "highest predicted IoU kept",
    "clicks": "click 1 as for `point` (multimask, best predicted IoU); each next click at the "
              "centre (as above) of the larger error region of the previous mask: false negatives "
              "give a positive click, false positives a negative one, the larger maximum distance "
              "decides (a tie gives the negative click); all clicks so far plus the previous "
              "low-res logits as mask input, single-mask output; once a mask is exact no click "
              "follows and its IoU of 1 is carried to K",
    "iou": "|pred & gt| / |pred | gt| on the full-resolution masks",
    "noc": "NoC@t: clicks needed to reach IoU >= t, K when never reached; NoF@t: instances "
           "that never reach it",
    "area_ranges": f"small: area < {SMALL_AREA_MAX}, medium: area < {MEDIUM_AREA_MAX}, large: "
                   "the rest (the annotation's `area` field, as in COCOeval)",
}


@dataclass
class EvalResult:
    prompt: str
    num_clicks: int
    instances: list[InstanceResult]
    skipped: list[Skipped]
    metrics: dict = field(default_factory=dict)

    @property
    def bad_input(self) -> bool:
        """Whether anything was skipped because the dataset is broken (not by the protocol)."""
        return any(s.reason in BAD_INPUT_SKIPS for s in self.skipped)


def _best(masks, iou_predictions, low_res) -> tuple[np.ndarray, np.ndarray]:
    """The mask with the highest predicted IoU (first on ties) and its low-res logits [1, h, w]."""
    i = int(np.argmax(np.asarray(iou_predictions).reshape(-1)))
    return np.asarray(masks[i]) > 0, np.asarray(low_res[i])[None]


def evaluate_instance(predictor, gt_mask: np.ndarray, box_xyxy: Sequence[float], prompt: str,
                      num_clicks: int = 1) -> list[float]:
    """IoU after each prompt for one instance, on the image last given to `predictor.set_image`.

    gt_mask: [H, W] bool, not empty. box_xyxy: [4] pixels. Returns 1 value for `box` and
    `point`, `num_clicks` values for `clicks`.
    """
    if prompt == "box":
        masks, scores, low_res = predictor.predict(box=np.asarray(box_xyxy, dtype=np.float32),
                                                   multimask_output=False)
        return [mask_iou(_best(masks, scores, low_res)[0], gt_mask)]
    if prompt not in ("point", "clicks"):
        raise ValueError(f"unknown prompt {prompt!r}; expected one of {PROMPTS}")
    clicks = [clicks_lib.first_click(gt_mask)]
    coords, labels = clicks_lib.clicks_to_prompt(clicks)
    pred, logits = _best(*predictor.predict(point_coords=coords, point_labels=labels,
                                            multimask_output=True))
    ious = [mask_iou(pred, gt_mask)]
    total = 1 if prompt == "point" else num_clicks
    while len(ious) < total:
        click = clicks_lib.next_click(gt_mask, pred)
        if click is None:  # exact already: nothing left to correct
            ious.extend([ious[-1]] * (total - len(ious)))
            break
        clicks.append(click)
        coords, labels = clicks_lib.clicks_to_prompt(clicks)
        pred, logits = _best(*predictor.predict(point_coords=coords, point_labels=labels,
                                                mask_input=logits, multimask_output=False))
        ious.append(mask_iou(pred, gt_mask))
    return ious


def evaluate_boxes(predictor, gt_masks: Sequence[np.ndarray], boxes_xyxy: Sequence[Sequence[float]]
                   ) -> list[float]:
    """The `box` protocol for several instances of the image last given to `set_image`, in one
    `predict(box=[n, 4])` call (a predictor answers each box on its own, so this is
    `evaluate_instance(..., "box")` per instance, with the predictor's fixed cost per call paid
    once). gt_masks: n [H, W] bool; boxes_xyxy: n [4] pixels. Returns n IoUs."""
    n = len(boxes_xyxy)
    if n != len(gt_masks):
        raise ValueError(f"{n} boxes for {len(gt_masks)} masks")
    if n == 0:
        return []
    masks, scores, low_res = predictor.predict(box=np.asarray(boxes_xyxy, dtype=np.float32).reshape(n, 4),
                                               multimask_output=False)
    # The official predictor drops the prompt axis for a single prompt: put it back.
    masks = np.asarray(masks).reshape(n, -1, *np.shape(masks)[-2:])
    scores = np.asarray(scores).reshape(n, -1)
    low_res = np.asarray(low_res).reshape(n, -1, *np.shape(low_res)[-2:])
    return [mask_iou(_best(masks[i], scores[i], low_res[i])[0], gt) for i, gt in enumerate(gt_masks)]


def _image_results(predictor, image_hw: tuple[int, int], pairs, prompt: str, num_clicks: int):
    """(instance, IoUs) for each (instance, gt mask) of `pairs` on the image set last; `box`
    prompts go in groups (evaluate_boxes), the others one instance at a time."""
    if prompt != "box":
        for inst, gt_mask in pairs:
            yield inst, evaluate_instance(predictor, gt_mask, inst.bbox_xyxy, prompt, num_clicks)
        return
    step = max(1, min(BOX_BATCH_MAX, BOX_BATCH_PIXELS // max(image_hw[0] * image_hw[1], 1)))
    for start in range(0, len(pairs), step):
        group = pairs[start: start + step]
        ious = evaluate_boxes(predictor, [gt for _, gt in group], [inst.bbox_xyxy for inst, _ in group])
        for (inst, _), iou in zip(group, ious):
            yield inst, [iou]


def iter_evaluate(predictor, dataset: CocoInstances, prompt: str, num_clicks: int = 1,
                  progress: bool = False, skipped: list[Skipped] | None = None
                  ) -> Iterator[InstanceResult]:
    """Yield the result of each instance of `dataset`, image by image (images in id order).

    `dataset`: a CocoInstances, or another dataset with `images` and `iter_images(skipped)`
    (segapp.evaluation.folder.FolderInstances). Instances found unusable while reading images
    and masks are appended to `skipped` (when given); those left out when loading are in
    `dataset.skipped`.
    """
    from tqdm import tqdm

    if prompt not in PROMPTS:
        raise ValueError(f"unknown prompt {prompt!r}; expected one of {PROMPTS}")
    if num_clicks < 1:
        raise ValueError(f"num_clicks must be at least 1, got {num_clicks}")
    total = sum(len(e.instances) for e in dataset.images)
    with tqdm(total=total, unit="inst", desc=f"eval {prompt}", disable=not progress) as bar:
        images = (iter_images(dataset, skipped) if isinstance(dataset, CocoInstances)
                  else dataset.iter_images(skipped))
        for entry, image, pairs in images:
            predictor.set_image(image)
            for inst, ious in _image_results(predictor, image.shape[:2], pairs, prompt, num_clicks):
                bar.update(1)
                yield InstanceResult(inst.image_id, inst.annotation_id, inst.category_id,
                                     inst.category, inst.area, tuple(ious))
            bar.update(len(entry.instances) - len(pairs))  # those skipped while decoding


def evaluate(predictor, dataset: CocoInstances, prompt: str, num_clicks: int | None = None,
             progress: bool = False) -> EvalResult:
    """Evaluate every instance of `dataset` and compute the metrics. `num_clicks` (K) applies
    to the `clicks` prompt only (default 5); `box` and `point` give one IoU per instance."""
    if prompt != "clicks":
        if num_clicks not in (None, 1):
            raise ValueError(f"--clicks applies to the clicks prompt only, not to {prompt!r}")
        num_clicks = 1
    elif num_clicks is None:
        num_clicks = DEFAULT_CLICKS
    skipped = list(dataset.skipped)
    results = list(iter_evaluate(predictor, dataset, prompt, num_clicks, progress, skipped))
    return EvalResult(prompt, num_clicks, results, skipped, breakdown(results) if results else {})


# ---------------------------------------------------------------------------------------------
# outputs


def skipped_summary(skipped: Sequence[Skipped]) -> dict:
    counts: dict[str, int] = {}
    for s in skipped:
        counts[s.reason] = counts.get(s.reason, 0) + 1
    return {"total": len(skipped), "counts": dict(sorted(counts.items())),
            "instances": [{"image_id": s.image_id, "annotation_id": s.annotation_id,
                           "reason": s.reason, "detail": s.detail} for s in skipped]}


def build_report(result: EvalResult, dataset, predictor_info: dict,
                 protocol_options: dict) -> dict:
    """The report.json content. A dataset other than CocoInstances gives `describe()` (its
    paths), `instance_rule` (which instances it takes) and `rule_overrides` (rules it words
    differently, e.g. where its boxes come from)."""
    if isinstance(dataset, CocoInstances):
        described = {"annotations": str(dataset.annotations_path),
                     "images_dir": str(dataset.images_dir)}
        instance_rule, rules = PROTOCOL_RULES["instances"], PROTOCOL_RULES
    else:
        described, instance_rule = dataset.describe(), dataset.instance_rule
        rules = {**PROTOCOL_RULES, **dataset.rule_overrides}
    return {
        "protocol": {
            "prompt": result.prompt,
            "num_clicks": result.num_clicks,
            **protocol_options,
            "rules": {"instances": instance_rule, result.prompt: rules[result.prompt],
                      **{k: rules[k] for k in ("iou", "noc", "area_ranges")}},
            "noc_thresholds": list(NOC_THRESHOLDS),
        },
        "dataset": {**described,
                    "images_evaluated": len({r.image_id for r in result.instances}),
                    "instances_evaluated": len(result.instances)},
        "predictor": predictor_info,
        "versions": versions(),
        "metrics": result.metrics,
        "skipped": skipped_summary(result.skipped),
    }


def write_csv(path: Path, result: EvalResult, file_names: dict[int, str] | None = None) -> None:
    """One row per instance; with `file_names` (image id -> file name) a `file_name` column
    follows `image_id`."""
    named = file_names is not None
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["image_id", *(["file_name"] if named else []), "annotation_id",
                         "category_id", "category", "area", "area_range",
                         *(f"iou_{k}" for k in range(1, result.num_clicks + 1))])
        for r in result.instances:
            writer.writerow([r.image_id, *([file_names[r.image_id]] if named else []),
                             r.annotation_id, r.category_id, r.category,
                             f"{r.area:g}", r.area_range, *(f"{v:.6f}" for v in r.ious)])


# Plot layout (pixels) and colours (BGR) for the mIoU-vs-clicks chart.
PLOT_W, PLOT_H, MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 720, 480, 70, 150, 40, 60
SERIES_COLOURS = {"all": (40, 40, 40), "small": (60, 60, 220), "medium": (60, 160, 60),
                  "large": (200, 110, 30)}


def plot_miou(path: Path, result: EvalResult, title: str) -> None:
    """mIoU@k against k, overall and per area range, drawn with OpenCV and written as PNG."""
    img = np.full((PLOT_H, PLOT_W, 3), 255, np.uint8)
    x0, x1, y0, y1 = MARGIN_L, PLOT_W - MARGIN_R, PLOT_H - MARGIN_B, MARGIN_T
    k_max = result.num_clicks
    font = cv2.FONT_HERSHEY_SIMPLEX

    def px(k: int, v: float) -> tuple[int, int]:
        fx = 0.5 if k_max == 1 else (k - 1) / (k_max - 1)
        return int(round(x0 + fx * (x1 - x0))), int(round(y0 + v * (y1 - y0)))

    for i in range(11):  # y grid and labels, mIoU 0..1
        y = px(1, i / 10)[1]
        cv2.line(img, (x0, y), (x1, y), (225, 225, 225), 1)
        cv2.putText(img, f"{i / 10:.1f}", (x0 - 40, y + 5), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    for k in range(1, k_max + 1):
        x = px(k, 0)[0]
        cv2.line(img, (x, y0), (x, y0 + 5), (0, 0, 0), 1)
        cv2.putText(img, str(k), (x - 5, y0 + 22), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.rectangle(img, (x0, y1), (x1, y0), (0, 0, 0), 1)
    x_label = {"clicks": "clicks", "point": "one click", "box": "box prompt"}[result.prompt]
    cv2.putText(img, x_label, ((x0 + x1) // 2 - 35, PLOT_H - 15), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "mIoU", (10, MARGIN_T - 15), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, title, (x0, MARGIN_T - 15), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)

    series = {"all": result.metrics.get("overall", {})}
    series.update({a: result.metrics.get("by_area", {}).get(a, {}) for a in AREA_RANGES})
    legend_y = MARGIN_T + 10
    for name, summary in series.items():
        if not summary.get("count"):
            continue
        colour = SERIES_COLOURS[name]
        pts = [px(k, v) for k, v in enumerate(summary["miou"], start=1)]
        for a, b in zip(pts, pts[1:]):
            cv2.line(img, a, b, colour, 2, cv2.LINE_AA)
        for p in pts:
            cv2.circle(img, p, 4, colour, -1, cv2.LINE_AA)
        cv2.line(img, (x1 + 15, legend_y), (x1 + 40, legend_y), colour, 2, cv2.LINE_AA)
        cv2.putText(img, f"{name} ({summary['count']})", (x1 + 47, legend_y + 5), font, 0.45,
                    (0, 0, 0), 1, cv2.LINE_AA)
        legend_y += 22
    if not cv2.imwrite(str(path), img):
        raise OSError(f"cannot write {path}")


def format_table(result: EvalResult) -> str:
    """The console table: one row per area range plus all, columns mIoU@k and NoC."""
    ks = list(range(1, result.num_clicks + 1))
    shown = ks if len(ks) <= 8 else sorted({1, 2, 3, 5, 10, 15, 20, ks[-1]} & set(ks))
    header = ["subset", "count", *(f"mIoU@{k}" for k in shown)]
    clicks = result.prompt == "clicks"
    if clicks:
        header += ["NoC@85", "NoC@90"]
    rows = []
    groups = [("all", result.metrics.get("overall", {}))]
    groups += [(a, result.metrics.get("by_area", {}).get(a, {})) for a in AREA_RANGES]
    for name, s in groups:
        if not s.get("count"):
            rows.append([name, "0", *("-" for _ in shown), *(["-", "-"] if clicks else [])])
            continue
        row = [name, str(s["count"]), *(f"{s['miou'][k - 1]:.4f}" for k in shown)]
        if clicks:
            row += [f"{s['noc85']:.2f}", f"{s['noc90']:.2f}"]
        rows.append(row)
    return text_table(header, rows)


def write_outputs(out_dir: Path, result: EvalResult, report: dict, title: str,
                  file_names: dict[int, str] | None = None) -> dict[str, Path]:
    """Write report.json, per_instance.csv and the PNG plot into `out_dir` (created)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"report": out_dir / REPORT_NAME, "csv": out_dir / CSV_NAME, "plot": out_dir / PLOT_NAME}
    write_json(paths["report"], report)
    write_csv(paths["csv"], result, file_names)
    plot_miou(paths["plot"], result, title)
    return paths
