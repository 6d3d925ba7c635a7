"""What the services of one server share: the model, the one lock around it, the limits, the
"segment everything" options and the clock.

One `Runtime` is made per server and passed to the image service and the video service, so
both take the same lock (requests of every user are serialised inside the model, never
interleaved) and read the same limits and clock; neither borrows the other's.

    runtime = Runtime(segapp.build_model("test_tiny"))
    images = ImageService(runtime)
    videos = VideoService(runtime)
"""
from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from segapp.service.limits import Limits
from segapp.service.memory import pin_mmap_threshold


@dataclass(eq=False)
class Runtime:
    """model: a SAM2Model (`segapp.build_model`). limits: see Limits.
    amg_options: extra AutomaticMaskGenerator arguments for "segment everything" (e.g.
      {"pred_iou_thresh": 0.0} for random-weight test models, whose scores are low).
    clock: seconds, for tests of eviction (default time.monotonic).
    model_lock: held around every call into the model.
    """

    model: Any
    limits: Limits = field(default_factory=Limits)
    amg_options: dict = field(default_factory=dict)
    clock: Callable[[], float] = time.monotonic
    model_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.amg_options = dict(self.amg_options or {})
        pin_mmap_threshold()  # a server's memory stays flat over uploads (segapp.service.memory)

    # ------------------------------------------------------------------ predictors
    def image_predictor(self):
        """A new ImagePredictor over the model (one per session: it holds that image's embedding)."""
        from segapp.image_predictor import ImagePredictor

        return ImagePredictor(self.model)

    @functools.cached_property
    def video_predictor(self):
        """The VideoPredictor over the model, shared by every video session (their state lives
        in the sessions). Raises segapp.bundled.ImageOnlyModelError for an images-only model."""
        from segapp.video.predictor import VideoPredictor

        return VideoPredictor(self.model)

    # ------------------------------------------------------------------ model calls (locked)
    def embed(self, predictor, image: np.ndarray) -> None:
        """predictor.set_image(image) under the model lock."""
        with self.model_lock:
            predictor.set_image(image)

    def predict(self, predictor, points: Sequence, labels: Sequence, box: Sequence | None
                ) -> tuple[np.ndarray, np.ndarray]:
        """([C, H, W] bool multimask candidates, [C] float32 predicted IoUs) for one object's
        prompts: points [(x, y), ...] pixels, labels 1 positive / 0 negative, box xyxy or None."""
        coords = np.asarray(points, dtype=np.float32).reshape(-1, 2) if len(points) else None
        lab = np.asarray(labels, dtype=np.int32) if len(points) else None
        box_arr = np.asarray(box, dtype=np.float32) if box is not None else None
        with self.model_lock:
            masks, scores, _ = predictor.predict(point_coords=coords, point_labels=lab, box=box_arr,
                                                 multimask_output=True)
        return masks > 0.5, np.asarray(scores, dtype=np.float32)

    def mask_generator(self, points_per_side):
        """An AutomaticMaskGenerator with this runtime's options (binary masks); the grid size
        is checked against the limits (DemoError)."""
        from segapp.automatic_mask_generator import AutomaticMaskGenerator

        pps = self.limits.points_per_side(points_per_side)
        return AutomaticMaskGenerator(self.model, points_per_side=pps, output_mode="binary_mask",
                                      **self.amg_options)

    def generate(self, image: np.ndarray, points_per_side) -> tuple[list[dict], Any]:
        """"Segment everything" on one image under the model lock: (the generator's records,
        largest first, so small masks are drawn on top; the generator, for its thresholds)."""
        generator = self.mask_generator(points_per_side)
        with self.model_lock:
            records = generator.generate(image)
        return sorted(records, key=lambda r: -r["area"]), generator


def nothing_found_note(generator) -> str:
    """What to tell the user when "segment everything" kept no mask: the model, the filters
    the masks failed (set on the server: the runtime's amg_options) and what to do instead."""
    from segapp import bundled
    from segapp.build_info import model_info

    label = model_info(generator.predictor.model).label
    text = (f"No masks found by {label}: none passed the quality filters (predicted IoU > "
            f"{generator.pred_iou_thresh:g}, stability >= {generator.stability_score_thresh:g}). "
            "Click the object instead, or try a denser grid")
    if label.startswith(bundled.NAME):
        text += f"; for full quality start the demo with: segapp demo --download {bundled.FULL_QUALITY}"
    return text + "."
