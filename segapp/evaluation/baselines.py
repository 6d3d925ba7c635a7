"""Model-free predictors with the SAM2ImagePredictor interface, to anchor the numbers.

- `BoxBaseline`: the box prompt filled as the mask (every pixel whose centre lies in the box).
- `GrabCutBaseline`: OpenCV GrabCut initialised with the box prompt.

Both need a box: they serve the `box` prompt only and raise ValueError when called without one
(points and mask inputs are not used; clicks cannot be simulated with them).
"""
from __future__ import annotations

import logging

import cv2
import numpy as np

logger = logging.getLogger(__name__)

LOW_RES_SIZE = 256  # side of the low-resolution logits SAM 2 predictors return
LOGIT_INSIDE, LOGIT_OUTSIDE = 10.0, -10.0  # logits standing for a hard 0/1 mask
NUM_MULTIMASK = 3  # masks returned with multimask_output=True, as SAM 2 does
GRABCUT_ITERATIONS = 5
GRABCUT_SEED = 0


def box_to_mask(box: np.ndarray, height: int, width: int) -> np.ndarray:
    """[H, W] bool: pixels (column c, row r) whose centre (c + 0.5, r + 0.5) lies in the closed
    box [x0, x1] x [y0, y1]. box: [4] float, xyxy pixels."""
    x0, y0, x1, y1 = (float(v) for v in np.asarray(box, dtype=np.float64).reshape(4))
    c0, c1 = max(int(np.ceil(x0 - 0.5)), 0), min(int(np.floor(x1 - 0.5)), width - 1)
    r0, r1 = max(int(np.ceil(y0 - 0.5)), 0), min(int(np.floor(y1 - 0.5)), height - 1)
    mask = np.zeros((height, width), dtype=bool)
    if c1 >= c0 and r1 >= r0:
        mask[r0:r1 + 1, c0:c1 + 1] = True
    return mask


class _BoxPromptPredictor:
    """set_image / predict plumbing shared by the baselines; subclasses implement `_segment`."""

    name = "baseline"

    def __init__(self) -> None:
        self._image: np.ndarray | None = None

    def set_image(self, image: np.ndarray) -> None:
        """image: [H, W, 3] uint8 RGB."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an [H, W, 3] uint8 RGB image, got {image.shape} {image.dtype}")
        self._image = image

    def reset_predictor(self) -> None:
        self._image = None

    def predict(self, point_coords=None, point_labels=None, box=None, mask_input=None,
                multimask_output: bool = True, return_logits: bool = False, normalize_coords=True):
        """(masks [C, H, W] bool, iou_predictions [C] float32, low_res_masks [C, 256, 256] float32)
        with C = 3 if multimask_output else 1, all C the same mask; iou_predictions are 1.
        box: [4] or [B, 4] xyxy; with B > 1 boxes each output gains a leading B axis, as in
        SAM2ImagePredictor. Points and mask_input are not used; a box is required."""
        if self._image is None:
            raise RuntimeError("an image must be set with set_image(...) before predict(...)")
        if box is None:
            raise ValueError(f"the {self.name} predictor needs a box prompt; it cannot use "
                             "points alone (evaluate it with --prompt box)")
        if not normalize_coords:
            raise ValueError(f"the {self.name} predictor takes box coordinates in pixels only")
        boxes = np.asarray(box, dtype=np.float64)
        if boxes.shape != (4,) and (boxes.ndim != 2 or boxes.shape[1] != 4 or len(boxes) == 0):
            raise ValueError(f"box must have shape [4] or [B, 4] (x0, y0, x1, y1), got {boxes.shape}")
        outputs = [self._predict_box(b, multimask_output, return_logits) for b in boxes.reshape(-1, 4)]
        if len(outputs) == 1:
            return outputs[0]
        return tuple(np.stack(parts) for parts in zip(*outputs))

    def _predict_box(self, box: np.ndarray, multimask_output: bool, return_logits: bool):
        mask = self._segment(box)
        count = NUM_MULTIMASK if multimask_output else 1
        logits = np.where(mask, LOGIT_INSIDE, LOGIT_OUTSIDE).astype(np.float32)
        low_res = cv2.resize(logits, (LOW_RES_SIZE, LOW_RES_SIZE), interpolation=cv2.INTER_LINEAR)
        masks = np.repeat((logits if return_logits else mask)[None], count, axis=0)
        return (masks, np.ones(count, dtype=np.float32),
                np.repeat(low_res[None], count, axis=0))

    def _segment(self, box: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class BoxBaseline(_BoxPromptPredictor):
    """The box itself as the mask."""

    name = "box-baseline"

    def _segment(self, box: np.ndarray) -> np.ndarray:
        h, w = self._image.shape[:2]
        return box_to_mask(box, h, w)


class GrabCutBaseline(_BoxPromptPredictor):
    """OpenCV GrabCut (5 iterations) from the box; definite and probable foreground form the mask.

    OpenCV's random generator is reseeded before each call, so results are deterministic. When
    GrabCut cannot run (a box under 2 pixels wide or high, or one leaving no background), the
    filled box is returned instead and the fallback is logged at debug level. When GrabCut
    takes the whole box as background (common for small objects) the empty mask is kept: it is
    GrabCut's answer; `stats()` counts both cases.
    """

    name = "grabcut"

    def __init__(self, iterations: int = GRABCUT_ITERATIONS) -> None:
        super().__init__()
        self.iterations = iterations
        self._bgr: np.ndarray | None = None
        self.fallbacks = 0  # boxes GrabCut could not start from (the filled box was returned)
        self.empty_outputs = 0  # boxes where GrabCut took every pixel as background

    def set_image(self, image: np.ndarray) -> None:
        super().set_image(image)
        self._bgr = np.ascontiguousarray(self._image[:, :, ::-1])

    def _segment(self, box: np.ndarray) -> np.ndarray:
        h, w = self._image.shape[:2]
        box_mask = box_to_mask(box, h, w)
        rows, cols = np.nonzero(box_mask.any(axis=1))[0], np.nonzero(box_mask.any(axis=0))[0]
        if len(rows) < 2 or len(cols) < 2 or box_mask.all():
            return self._fallback(box_mask, "box too small or covering the whole image")
        rect = (int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1))
        gc_mask = np.zeros((h, w), dtype=np.uint8)
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        cv2.setRNGSeed(GRABCUT_SEED)
        try:
            cv2.grabCut(self._bgr, gc_mask, rect, bgd, fgd, self.iterations, cv2.GC_INIT_WITH_RECT)
        except cv2.error as err:
            return self._fallback(box_mask, str(err).strip().splitlines()[-1])
        mask = (gc_mask == cv2.GC_FGD) | (gc_mask == cv2.GC_PR_FGD)
        self.empty_outputs += not mask.any()
        return mask

    def stats(self) -> dict:
        """Counts for the report: `fallbacks_to_box` and `empty_outputs` (kept as they are)."""
        return {"fallbacks_to_box": self.fallbacks, "empty_outputs": self.empty_outputs}

    def _fallback(self, box_mask: np.ndarray, why: str) -> np.ndarray:
        self.fallbacks += 1
        logger.debug("grabcut: using the filled box instead (%s)", why)
        return box_mask


BASELINES = {BoxBaseline.name: BoxBaseline, GrabCutBaseline.name: GrabCutBaseline}
