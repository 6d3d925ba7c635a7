"""The demo's stateless API endpoints: one image and its prompts in, a mask (or every mask) out.

No session: the embedding of a recent image is cached by content (a few at most), so a client
that sends the same image with new prompts pays only the decoder.
"""
from __future__ import annotations

import collections
import json
import threading
import time
from typing import Any

import numpy as np

from segapp.service import exports
from segapp.service.limits import API_EMBEDDING_CACHE, MAX_POINTS_PER_OBJECT, MAX_PROMPTS_JSON_CHARS, DemoError
from segapp.service.runtime import Runtime
from segapp.service.uploads import image_key, load_image


class ApiEndpoints:
    """segment_image and segment_everything_image over a runtime's model (and lock)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._cache_lock = threading.Lock()
        self._predictors: collections.OrderedDict[str, Any] = collections.OrderedDict()

    def _predictor(self, image: np.ndarray):
        """(a predictor holding this image's embedding, whether it was cached)."""
        key = image_key(image)
        with self._cache_lock:
            predictor = self._predictors.get(key)
            if predictor is not None:
                self._predictors.move_to_end(key)
                return predictor, True
        predictor = self.runtime.image_predictor()
        self.runtime.embed(predictor, image)
        with self._cache_lock:
            self._predictors[key] = predictor
            while len(self._predictors) > API_EMBEDDING_CACHE:
                self._predictors.popitem(last=False)
        return predictor, False

    def segment_image(self, image, prompts: str | dict) -> tuple[np.ndarray, dict]:
        """One-shot segmentation: returns ([H, W] bool best mask, info) where info holds every
        candidate's score, the chosen index, the area and the timings."""
        limits = self.runtime.limits
        array = load_image(image, limits)
        points, labels, box = parse_prompts(prompts, array.shape[:2], limits.max_points_per_object)
        start = time.perf_counter()
        predictor, cached = self._predictor(array)
        embed_ms = (time.perf_counter() - start) * 1e3
        start = time.perf_counter()
        masks, scores = self.runtime.predict(predictor, points, labels, box)
        decode_ms = (time.perf_counter() - start) * 1e3
        best = int(np.argmax(scores))
        info = {
            "scores": [float(s) for s in scores],
            "best": best,
            "area": int(masks[best].sum()),
            "image_size": [int(array.shape[0]), int(array.shape[1])],
            "timings_ms": {"embedding": round(embed_ms, 2), "embedding_cached": cached, "decoder": round(decode_ms, 2)},
        }
        return masks[best], info

    def segment_everything_image(self, image, points_per_side: int = 16) -> tuple[np.ndarray, list[dict]]:
        """"Segment everything": ([H, W] uint16 instance-id map, records) where record k
        (id k + 1) has the COCO RLE segmentation, area, bbox and scores."""
        array = load_image(image, self.runtime.limits)
        records, _ = self.runtime.generate(array, points_per_side)
        id_map = exports.instance_id_map([r["segmentation"] for r in records], array.shape[:2])
        out = []
        for k, rec in enumerate(records):
            out.append({
                "id": k + 1,
                "segmentation": exports.encode_rle(rec["segmentation"]),
                "area": int(rec["area"]),
                "bbox": [float(v) for v in rec["bbox"]],
                "predicted_iou": float(rec["predicted_iou"]),
                "stability_score": float(rec["stability_score"]),
                "point_coords": [[float(v) for v in p] for p in rec["point_coords"]],
            })
        return id_map, out


def parse_prompts(prompts: str | dict, hw: tuple[int, int], max_points: int = MAX_POINTS_PER_OBJECT):
    """Validate the API's prompt JSON: {"points": [[x, y], ...], "labels": [1, 0, ...],
    "box": [x0, y0, x1, y1]} with any of the keys (labels default to 1, positive), at most
    `max_points` points. Returns (points tuple, labels tuple, box tuple or None); raises
    DemoError with the reason."""
    if isinstance(prompts, (str, bytes)) and len(prompts) > MAX_PROMPTS_JSON_CHARS:
        raise DemoError(f"prompts JSON is {len(prompts)} characters; the limit is {MAX_PROMPTS_JSON_CHARS} "
                        f"(at most {max_points} points per request)")
    if isinstance(prompts, (str, bytes)):
        try:
            prompts = json.loads(prompts or "{}")
        except json.JSONDecodeError as err:
            raise DemoError(f"prompts are not valid JSON: {err}") from err
    if not isinstance(prompts, dict):
        raise DemoError('prompts must be a JSON object like {"points": [[x, y]], "labels": [1], "box": [x0, y0, x1, y1]}')
    unknown = set(prompts) - {"points", "labels", "box"}
    if unknown:
        raise DemoError(f"unknown prompt keys {sorted(unknown)}; use points, labels and box")
    h, w = hw
    points = prompts.get("points") or []
    if isinstance(points, list) and len(points) > max_points:
        raise DemoError(f"{len(points)} points in one request; the limit is {max_points} points per "
                        "request (one object)")
    try:
        points = tuple((float(p[0]), float(p[1])) for p in points if len(p) == 2) if points else ()
    except (TypeError, ValueError, IndexError) as err:
        raise DemoError(f"points must be a list of [x, y] pairs: {err}") from err
    if len(points) != len(prompts.get("points") or []):
        raise DemoError("points must be a list of [x, y] pairs")
    labels = prompts.get("labels")
    if labels is None:
        labels = [1] * len(points)
    if not isinstance(labels, list) or len(labels) != len(points) or any(l not in (0, 1) for l in labels):
        raise DemoError(f"labels must be a list of {len(points)} values, each 1 (positive) or 0 (negative)")
    box = prompts.get("box")
    if box is not None:
        try:
            box = tuple(float(v) for v in box)
        except (TypeError, ValueError) as err:
            raise DemoError(f"box must be [x0, y0, x1, y1] numbers: {err}") from err
        if len(box) != 4:
            raise DemoError("box must be [x0, y0, x1, y1]")
        box = (min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), max(box[1], box[3]))
    if not points and box is None:
        raise DemoError("give at least one point or a box")
    for x, y in points + ((box[:2], box[2:]) if box else ()):
        if not (np.isfinite(x) and np.isfinite(y) and 0 <= x <= w and 0 <= y <= h):
            raise DemoError(f"prompt ({x:g}, {y:g}) is outside the {w}x{h} image")
    return points, tuple(int(l) for l in labels), box
