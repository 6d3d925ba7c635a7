"""IoU, mIoU@k and NoC over evaluated instances, overall and broken down by area and category."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from segapp.evaluation.coco import AREA_RANGES, area_range

NOC_THRESHOLDS = (0.85, 0.90)


@dataclass(frozen=True)
class InstanceResult:
    """The IoU of one instance after each click (one value for box and single-point prompts)."""

    image_id: int
    annotation_id: int
    category_id: int
    category: str
    area: float
    ious: tuple[float, ...]  # ious[k - 1]: IoU after k clicks

    @property
    def area_range(self) -> str:
        return area_range(self.area)


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """|pred ∩ gt| / |pred ∪ gt| of two [H, W] bool masks; 1.0 when both are empty."""
    if pred.shape != gt.shape:
        raise ValueError(f"mask shapes differ: prediction {pred.shape}, ground truth {gt.shape}")
    union = np.count_nonzero(pred | gt)
    if union == 0:
        return 1.0
    return np.count_nonzero(pred & gt) / union


def clicks_to_reach(ious: Sequence[float], threshold: float) -> int:
    """Number of clicks k (1-based) after which IoU first reaches `threshold`; len(ious) if never."""
    for k, iou in enumerate(ious, start=1):
        if iou >= threshold:
            return k
    return len(ious)


def summarize(results: Sequence[InstanceResult]) -> dict:
    """Metrics of a group of instances, all evaluated with the same number of clicks K.

    Returns {"count", "miou": [mIoU@1..K], "noc85", "noc90" (mean clicks to reach the IoU, K when
    never reached), "nof85", "nof90" (instances that never reach it)}; empty groups give count 0.
    """
    if not results:
        return {"count": 0}
    ious = np.array([r.ious for r in results], dtype=np.float64)  # [N, K]
    out: dict = {"count": len(results), "miou": [float(v) for v in ious.mean(axis=0)]}
    for t in NOC_THRESHOLDS:
        tag = f"{round(t * 100)}"
        out[f"noc{tag}"] = float(np.mean([clicks_to_reach(r.ious, t) for r in results]))
        out[f"nof{tag}"] = int(sum(max(r.ious) < t for r in results))
    return out


def breakdown(results: Iterable[InstanceResult]) -> dict:
    """{"overall": summary, "by_area": {small, medium, large}, "by_category": {name: summary}}.

    Categories are listed in order of category id."""
    results = list(results)
    lengths = {len(r.ious) for r in results}
    if len(lengths) > 1:
        raise ValueError(f"instances were evaluated with different numbers of clicks: {lengths}")
    by_category: dict[str, list[InstanceResult]] = {}
    for r in sorted(results, key=lambda r: r.category_id):
        by_category.setdefault(r.category, []).append(r)
    return {
        "overall": summarize(results),
        "by_area": {a: summarize([r for r in results if r.area_range == a]) for a in AREA_RANGES},
        "by_category": {name: summarize(group) for name, group in by_category.items()},
    }
