"""Video object segmentation on DAVIS-layout folders: J, F and J&F (`segapp eval video`); the
folders are read and checked by `segapp.evaluation.davis`.

The semi-supervised protocol of DAVIS as davis2017-evaluation and vos-benchmark compute it:
the objects are the ids of the first frame's annotation; the prompt is given on the first
frame (its ground-truth masks, or a box or click made from them); every frame is predicted;
J (mask IoU) and F (boundary F-measure, segapp.evaluation.boundary) are measured per object on
every frame except the first and the last; an object's J and F are the means over those
frames, a sequence's the means over its objects, and the overall J and F the means over all
objects of all sequences; J&F = (J + F) / 2. The protocol is described in docs/evaluation.md.

A *tracker* here is anything with `track(frames_dir, prompts) -> iterator of (frame_idx,
{object_id: [H, W] bool})`: `FirstMaskTracker` (the baseline) or `PredictorTracker` (any object
with the SAM2VideoPredictor interface: segapp's VideoPredictor or the reference's).
"""
from __future__ import annotations

import csv
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping
from typing import Sequence as SequenceOf

import numpy as np

from segapp.evaluation import clicks as clicks_lib
from segapp.evaluation.boundary import BOUNDARY_TOLERANCE, boundary_f, tolerance_radius
from segapp.evaluation.davis import (PROTOCOL_SKIPS, SKIP_BAD_MASK, SKIP_UNREADABLE_FRAME, Sequence, SkippedSequence,
                                     VideoDataset)
from segapp.evaluation.metrics import mask_iou
from segapp.evaluation.outputs import REPORT_NAME, bar_chart, text_table, versions, write_json
from segapp.formats.boxes import mask_to_edge_box
from segapp.formats.label_masks import LabelMaskError, read_label_mask

logger = logging.getLogger(__name__)

PROMPTS = ("mask", "box", "point")
RECALL_THRESHOLD = 0.5  # J-Recall / F-Recall: share of frames scoring above this
DECAY_BINS = 4  # J-Decay / F-Decay: mean of the first quarter of frames minus the last
OBJECT_CSV, SEQUENCE_CSV, PLOT_NAME = "per_object.csv", "per_sequence.csv", "jf_per_sequence.png"

PROTOCOL_RULES = {
    "objects": "the object ids in the first frame's annotation (palette index = object id, 255 = "
               "void read as background; a 0/255 mask is object 1); ids appearing only later are "
               "not evaluated (listed as late_objects)",
    "mask": "each object's first-frame ground-truth mask given on frame 0 (semi-supervised)",
    "box": "each object's first-frame box, x0 = leftmost column, x1 = rightmost column + 1 "
           "(pixel edges, as a COCO bbox), given on frame 0",
    "point": "one positive click per object on frame 0, at its mask's pixel farthest from the "
             "boundary (as `segapp eval coco --prompt point`)",
    "frames": "every frame is predicted; the first and the last frame are left out of the "
              "measures (as davis2017-evaluation and vos-benchmark)",
    "J": "mask IoU |pred & gt| / |pred | gt|, 1 when both are empty",
    "F": "boundary F-measure: boundaries as in seg2bmap, matched within a disk of radius "
         f"ceil({BOUNDARY_TOLERANCE} x image diagonal) pixels; precision 1 without a predicted "
         "boundary, recall 1 without a ground-truth boundary, F 1 when neither has one",
    "means": "an object's J and F: means over its evaluated frames; a sequence's: means over its "
             "objects; overall: means over all objects of all sequences; J&F = (J + F) / 2; "
             f"recall: share of frames above {RECALL_THRESHOLD}; decay: mean of the first "
             f"{DECAY_BINS}th of the frames minus that of the last (DAVIS's bins)",
    "non_overlap": "segapp's VideoPredictor runs with non_overlap_masks=True (where objects "
                   "overlap the highest score keeps the pixel), as a DAVIS label map would",
}


@dataclass(frozen=True)
class ObjectResult:
    """J and F of one object on each evaluated frame (frames 1 .. n-2)."""

    sequence: str
    object_id: int
    frames: tuple[int, ...]
    j: tuple[float, ...]
    f: tuple[float, ...]

    def stats(self) -> dict:
        j, f = summary_stats(self.j), summary_stats(self.f)
        return {"J": j["mean"], "F": f["mean"], "J&F": (j["mean"] + f["mean"]) / 2,
                "J_recall": j["recall"], "F_recall": f["recall"],
                "J_decay": j["decay"], "F_decay": f["decay"], "frames": len(self.frames)}


@dataclass
class VideoEvalResult:
    prompt: str
    objects: list[ObjectResult]
    skipped: list[SkippedSequence]
    seconds: dict[str, float] = field(default_factory=dict)  # tracking time per sequence
    metrics: dict = field(default_factory=dict)

    @property
    def bad_input(self) -> bool:
        return any(s.reason not in PROTOCOL_SKIPS for s in self.skipped)


# ---------------------------------------------------------------------------------- prompts


def first_frame_prompt(mask: np.ndarray, prompt: str) -> dict:
    """The keyword arguments of one object's frame-0 prompt: {"mask": [H, W] bool} for `mask`,
    {"box": [4]} for `box`, {"points": [1, 2], "labels": [1]} for `point`."""
    if prompt == "mask":
        return {"mask": mask}
    if prompt == "box":
        return {"box": mask_to_edge_box(mask)}
    if prompt == "point":
        coords, labels = clicks_lib.clicks_to_prompt([clicks_lib.first_click(mask)])
        return {"points": coords, "labels": labels}
    raise ValueError(f"unknown prompt {prompt!r}; expected one of {PROMPTS}")


# ---------------------------------------------------------------------------------- trackers


class FirstMaskTracker:
    """The baseline: each object's first-frame mask, unchanged, on every frame (a static
    object scores 1). Takes the `mask` prompt only."""

    name = "first-mask"

    def track(self, sequence: Sequence, prompts: Mapping[int, dict]
              ) -> Iterator[tuple[int, dict[int, np.ndarray]]]:
        if not all("mask" in p for p in prompts.values()):
            raise ValueError("the first-mask baseline copies the first frame's mask: it needs "
                             "--prompt mask")
        masks = {oid: np.asarray(p["mask"], dtype=bool) for oid, p in prompts.items()}
        for idx in range(len(sequence.frames)):
            yield idx, masks


class PredictorTracker:
    """Tracking with an object of the SAM2VideoPredictor interface (init_state, add_new_mask,
    add_new_points_or_box, propagate_in_video): all prompts on frame 0, then one forward pass."""

    def __init__(self, predictor, name: str = "segapp.VideoPredictor") -> None:
        self.predictor = predictor
        self.name = name

    def track(self, sequence: Sequence, prompts: Mapping[int, dict]
              ) -> Iterator[tuple[int, dict[int, np.ndarray]]]:
        import torch

        predictor = self.predictor
        with torch.inference_mode():
            state = predictor.init_state(str(sequence.frames_dir))
            for oid, prompt in prompts.items():
                if "mask" in prompt:
                    predictor.add_new_mask(state, 0, oid, prompt["mask"])
                else:
                    predictor.add_new_points_or_box(state, 0, oid, **prompt)
            for frame_idx, obj_ids, logits in predictor.propagate_in_video(state):
                masks = (logits > 0).cpu().numpy()[:, 0]
                yield frame_idx, {oid: masks[i] for i, oid in enumerate(obj_ids)}


# ---------------------------------------------------------------------------------- loop


def _measured_frames(n: int) -> range:
    return range(1, n - 1)


def evaluate_sequence(tracker, sequence: Sequence, prompt: str, bar=None) -> list[ObjectResult]:
    """J and F per object on frames 1 .. n-2 of one sequence. Raises LabelMaskError for an
    unreadable mask and RuntimeError naming the frame when the tracker skipped a frame."""
    first = read_label_mask(sequence.masks[0])
    prompts = {oid: first_frame_prompt(first == oid, prompt) for oid in sequence.object_ids}
    measured = _measured_frames(len(sequence.frames))
    j: dict[int, dict[int, float]] = {oid: {} for oid in sequence.object_ids}
    f: dict[int, dict[int, float]] = {oid: {} for oid in sequence.object_ids}
    empty = np.zeros((sequence.height, sequence.width), dtype=bool)
    for frame_idx, masks in tracker.track(sequence, prompts):
        if bar is not None:
            bar.update(1)
        if frame_idx not in measured:
            continue
        gt = read_label_mask(sequence.masks[frame_idx])
        for oid in sequence.object_ids:
            pred, target = masks.get(oid, empty), gt == oid
            j[oid][frame_idx] = mask_iou(pred, target)
            f[oid][frame_idx] = boundary_f(pred, target)
    missing = [i for i in measured if i not in j[sequence.object_ids[0]]]
    if missing:
        names = ", ".join(sequence.frames[i].name for i in missing[:5])
        raise RuntimeError(f"{len(missing)} frame(s) were not tracked (unreadable?): {names}")
    return [ObjectResult(sequence.name, oid, tuple(measured), tuple(j[oid][i] for i in measured),
                         tuple(f[oid][i] for i in measured)) for oid in sequence.object_ids]


def evaluate_video(tracker, dataset: VideoDataset, prompt: str, progress: bool = False
                   ) -> VideoEvalResult:
    """Evaluate every sequence of `dataset` and compute the metrics (see the module docstring).
    A sequence that fails while being evaluated (an unreadable frame) is skipped with a reason."""
    from tqdm import tqdm

    if prompt not in PROMPTS:
        raise ValueError(f"unknown prompt {prompt!r}; expected one of {PROMPTS}")
    result = VideoEvalResult(prompt, [], list(dataset.skipped))
    total = sum(len(s.frames) for s in dataset.sequences)
    with tqdm(total=total, unit="frame", desc=f"eval video {prompt}", disable=not progress) as bar:
        for sequence in dataset.sequences:
            bar.set_postfix_str(sequence.name)
            start, done = time.perf_counter(), bar.n
            try:
                objects = evaluate_sequence(tracker, sequence, prompt, bar)
            except LabelMaskError as err:
                result.skipped.append(SkippedSequence(sequence.name, SKIP_BAD_MASK, str(err)))
                continue
            except RuntimeError as err:
                result.skipped.append(SkippedSequence(sequence.name, SKIP_UNREADABLE_FRAME, str(err)))
                continue
            finally:
                bar.update(len(sequence.frames) - (bar.n - done))
            result.seconds[sequence.name] = time.perf_counter() - start
            result.objects.extend(objects)
    result.metrics = video_metrics(result.objects)
    return result


# ---------------------------------------------------------------------------------- metrics


def summary_stats(values: SequenceOf[float]) -> dict:
    """{"mean", "recall" (share above RECALL_THRESHOLD), "decay"} of per-frame values, as
    DAVIS's statistics: decay is the mean of the first of DECAY_BINS bins minus that of the
    last, bin edges at round(linspace(1, n, DECAY_BINS + 1)) - 1, each bin including both
    edges."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("no value to summarise")
    edges = np.floor(np.linspace(1, v.size, DECAY_BINS + 1) + 0.5).astype(int) - 1
    bins = [v[edges[i]: edges[i + 1] + 1] for i in range(DECAY_BINS)]
    return {"mean": float(v.mean()), "recall": float(np.mean(v > RECALL_THRESHOLD)),
            "decay": float(bins[0].mean() - bins[-1].mean())}


STAT_KEYS = ("J", "F", "J&F", "J_recall", "F_recall", "J_decay", "F_decay")


def _mean_stats(stats: list[dict]) -> dict:
    out = {k: float(np.mean([s[k] for s in stats])) for k in STAT_KEYS}
    out["objects"] = len(stats)
    return out


def video_metrics(objects: SequenceOf[ObjectResult]) -> dict:
    """{"overall": means over all objects, "by_sequence": {name: means over its objects},
    "by_object": {"<sequence>/<id>": the object's stats}}; each with J, F, J&F, recalls,
    decays and counts. Overall J&F is (J + F) / 2 of the overall means."""
    if not objects:
        return {}
    per_object = {f"{o.sequence}/{o.object_id}": o.stats() for o in objects}
    by_sequence: dict[str, list[dict]] = {}
    for o in objects:
        by_sequence.setdefault(o.sequence, []).append(per_object[f"{o.sequence}/{o.object_id}"])
    overall = _mean_stats(list(per_object.values()))
    overall["sequences"] = len(by_sequence)
    overall["frames"] = int(sum(len(o.frames) for o in objects))
    return {"overall": overall,
            "by_sequence": {name: {**_mean_stats(stats), "frames": stats[0]["frames"]}
                            for name, stats in by_sequence.items()},
            "by_object": per_object}


# ---------------------------------------------------------------------------------- outputs


def build_video_report(result: VideoEvalResult, dataset: VideoDataset, predictor_info: dict,
                       options: dict) -> dict:
    skipped_counts: dict[str, int] = {}
    for s in result.skipped:
        skipped_counts[s.reason] = skipped_counts.get(s.reason, 0) + 1
    late = {s.name: list(s.late_objects) for s in dataset.sequences if s.late_objects}
    return {
        "protocol": {
            "name": "davis-semi-supervised" if result.prompt == "mask" else f"davis-{result.prompt}",
            "prompt": result.prompt, **options,
            "boundary_tolerance": BOUNDARY_TOLERANCE,
            "boundary_radius_px": {s.name: tolerance_radius(s.height, s.width)
                                   for s in dataset.sequences},
            "rules": {k: PROTOCOL_RULES[k] for k in
                      ("objects", result.prompt, "frames", "J", "F", "means", "non_overlap")},
        },
        "dataset": {"root": str(dataset.root),
                    "sequences_evaluated": len({o.sequence for o in result.objects}),
                    "objects_evaluated": len(result.objects),
                    "late_objects": late},
        "predictor": predictor_info,
        "versions": versions(),
        "seconds": {"total": float(sum(result.seconds.values())),
                    "by_sequence": result.seconds},
        "metrics": result.metrics,
        "skipped": {"total": len(result.skipped), "counts": dict(sorted(skipped_counts.items())),
                    "sequences": [{"sequence": s.sequence, "reason": s.reason, "detail": s.detail}
                                  for s in result.skipped]},
    }


def _row(name: str, s: dict) -> list[str]:
    return [name, str(s["objects"]), str(s["frames"]),
            *(f"{s[k]:.4f}" for k in ("J&F", "J", "F", "J_recall", "F_recall", "J_decay", "F_decay"))]


STAT_HEADER = ["J&F", "J", "F", "J_recall", "F_recall", "J_decay", "F_decay"]


def format_video_table(result: VideoEvalResult) -> str:
    """Console table: one row per sequence, then the overall means (over objects)."""
    m = result.metrics
    rows = [_row(name, s) for name, s in m.get("by_sequence", {}).items()]
    if m:
        rows.append(_row("overall", m["overall"]))
    return text_table(["sequence", "objects", "frames", *STAT_HEADER], rows)


def write_video_outputs(out_dir: Path, result: VideoEvalResult, report: dict, title: str
                        ) -> dict[str, Path]:
    """report.json, per_object.csv, per_sequence.csv and jf_per_sequence.png into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"report": out_dir / REPORT_NAME, "objects_csv": out_dir / OBJECT_CSV,
             "sequences_csv": out_dir / SEQUENCE_CSV, "plot": out_dir / PLOT_NAME}
    write_json(paths["report"], report)
    metrics = result.metrics
    with open(paths["objects_csv"], "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["sequence", "object_id", "frames", *STAT_HEADER])
        for o in result.objects:
            s = metrics["by_object"][f"{o.sequence}/{o.object_id}"]
            writer.writerow([o.sequence, o.object_id, s["frames"], *(f"{s[k]:.6f}" for k in STAT_HEADER)])
    with open(paths["sequences_csv"], "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["sequence", "objects", "frames", *STAT_HEADER, "seconds"])
        for name, s in metrics.get("by_sequence", {}).items():
            writer.writerow([name, s["objects"], s["frames"], *(f"{s[k]:.6f}" for k in STAT_HEADER),
                             f"{result.seconds.get(name, 0.0):.3f}"])
    by_sequence = metrics.get("by_sequence", {})
    labels = [*by_sequence, "overall"] if metrics else []
    values = [s["J&F"] for s in by_sequence.values()] + ([metrics["overall"]["J&F"]] if metrics else [])
    bar_chart(paths["plot"], labels, values, title, "J&F")
    return paths
