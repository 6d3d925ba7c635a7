"""Segment everything: prompt the model with a grid of points and keep the good, distinct masks.

The official SAM2AutomaticMaskGenerator interface, defaults and results, computed in an
order that avoids most of its full-resolution work. Per batch of grid points:

1. decode the points to low-resolution logits (no upsampling) and, with use_m2m, decode
   again with each mask as mask input;
2. drop masks whose predicted IoU fails pred_iou_thresh - this needs no pixels at all;
3. upsample the survivors, a few at a time, to the crop's resolution, where the stability
   score and the box are measured (the official semantics) - the upsampled logits are
   dropped straight away and only the small low-res logits are kept;
4. drop unstable masks and masks cut by an inner crop edge.

Then box NMS within each crop and between crops, and only the masks that remain are
upsampled once more to be binarised and encoded. The filters and their order are the
official ones, so the same masks come out; only the work for discarded masks is skipped.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from segapp.amg import (
    MASK_INPUT_CLAMP,
    OUTPUT_MODES,
    MaskData,
    batch_iterator,
    batched_nms,
    box_area,
    box_xyxy_to_xywh,
    build_all_layer_point_grids,
    calculate_stability_score,
    generate_crop_boxes,
    is_box_near_crop_edge,
    uncrop_boxes_xyxy,
    uncrop_points,
)
from segapp.build_info import model_info
from segapp.formats.boxes import mask_to_box
from segapp.formats.rle import encode_rle, mask_to_rle
from segapp.image_predictor import ImagePredictor
from segapp.postprocess import fill_holes_and_sprinkles
from segapp.transforms import to_rgb_uint8

logger = logging.getLogger(__name__)

# Upsampled logits are handled this many pixels at a time (32 MiB of float32), enough to
# batch interpolation across masks while staying small next to the model.
UPSAMPLE_CHUNK_PIXELS = 1 << 23
# On CPU the decoder's per-prompt image tokens ([N, C] floats: 4 MiB per prompt at 1024, N =
# 64*64, C = 256) go through about ten passes (projections, attentions, norms). Prompts are
# decoded in chunks whose [chunk, N, C] tensor stays about this size, so that those passes
# find it in cache: 4 prompts at 1024 (16 at 512). Measured at 1024 on a 2-core machine, per
# prompt: 16 prompts a chunk ~1.2x slower than 4, 64 ~2x; 2 slightly slower than 4 (per-call
# overhead). points_per_batch stays the upper bound, as on a GPU.
CPU_DECODE_CHUNK_BYTES = 16 << 20


class AutomaticMaskGenerator:
    """Generates masks for a whole image from a grid of point prompts.

    Args (the official names and defaults):
      model: a SAM2Model (see `segapp.build_model`); the generator owns an ImagePredictor on it.
      points_per_side: grid points along each side of the image (points_per_side**2 in all);
        None when point_grids is given. Exactly one of the two must be given.
      points_per_batch: points decoded together (memory vs speed).
      pred_iou_thresh: keep masks whose predicted IoU is > this (0 disables the filter).
      stability_score_thresh: keep masks whose stability score is >= this (0 disables it).
      stability_score_offset: the logit shift between the two cut-offs of the stability score.
      mask_threshold: logit threshold of the binary masks.
      box_nms_thresh: box IoU above which a mask is a duplicate within a crop.
      crop_n_layers: extra layers of crops; layer i has (2**i)**2 crops of the image.
      crop_nms_thresh: box IoU above which a mask is a duplicate between crops (masks of
        smaller crops win).
      crop_overlap_ratio: overlap of neighbouring crops in layer 1, as a fraction of the
        image's short side (halved with each further layer).
      crop_n_points_downscale_factor: layer i uses points_per_side / factor**i points a side.
      point_grids: explicit grids, one per crop layer, each [N, 2] xy in [0, 1] of the crop.
      min_mask_region_area: if > 0, holes and islands up to this area (in low-res mask
        pixels) are removed from the low-res logits before upsampling, as the official
        predictor does.
      output_mode: "binary_mask" ([H, W] bool), "uncompressed_rle" or "coco_rle".
      use_m2m: refine every mask once by decoding its point again with the mask as input.
      multimask_output: three masks per point (else one).
      cpu_decode_chunk: fast path on CPU: decode at most about CPU_DECODE_CHUNK_BYTES of image
        tokens' worth of prompts per decoder call (fewer than points_per_batch at large image
        sizes), so that the decoder's passes find them in cache. Every prompt is decoded on
        its own row, so the masks are those of points_per_batch chunks up to float rounding;
        False: chunks of points_per_batch everywhere (segapp's own argument, not official).
    """

    def __init__(
        self,
        model,
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.8,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        mask_threshold: float = 0.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: Sequence[np.ndarray] | None = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
        use_m2m: bool = False,
        multimask_output: bool = True,
        cpu_decode_chunk: bool = True,
    ) -> None:
        if (points_per_side is None) == (point_grids is None):
            raise ValueError("give exactly one of points_per_side and point_grids "
                             f"(got points_per_side={points_per_side!r}, point_grids "
                             f"{'given' if point_grids is not None else 'None'})")
        if crop_n_layers < 0:
            raise ValueError(f"crop_n_layers must be >= 0, got {crop_n_layers}")
        if points_per_side is not None:
            if crop_n_points_downscale_factor < 1:
                raise ValueError(f"crop_n_points_downscale_factor must be >= 1, got {crop_n_points_downscale_factor}")
            fewest = int(points_per_side / crop_n_points_downscale_factor ** crop_n_layers)
            if fewest < 1:
                raise ValueError(f"points_per_side={points_per_side} leaves no points in crop layer {crop_n_layers} "
                                 f"(downscale factor {crop_n_points_downscale_factor})")
            self.point_grids = build_all_layer_point_grids(points_per_side, crop_n_layers,
                                                           crop_n_points_downscale_factor)
        else:
            self.point_grids = [_check_grid(g, i) for i, g in enumerate(point_grids)]
            if len(self.point_grids) < crop_n_layers + 1:
                raise ValueError(f"point_grids has {len(self.point_grids)} grids; crop_n_layers={crop_n_layers} "
                                 f"needs one per layer ({crop_n_layers + 1})")
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"unknown output_mode {output_mode!r}; choose one of {', '.join(OUTPUT_MODES)}")
        if points_per_batch < 1:
            raise ValueError(f"points_per_batch must be >= 1, got {points_per_batch}")
        if min_mask_region_area < 0:
            raise ValueError(f"min_mask_region_area must be >= 0, got {min_mask_region_area}")

        self.predictor = ImagePredictor(model, max_hole_area=min_mask_region_area,
                                        max_sprinkle_area=min_mask_region_area)
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.mask_threshold = mask_threshold
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.crop_n_points_downscale_factor = crop_n_points_downscale_factor
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode
        self.use_m2m = use_m2m
        self.multimask_output = multimask_output
        self.cpu_decode_chunk = cpu_decode_chunk
        self._warned_empty = False

    # ------------------------------------------------------------------ public
    @torch.inference_mode()
    def generate(self, image) -> list[dict[str, Any]]:
        """Masks for the whole image ([H, W, 3] uint8 RGB array or PIL image; other forms as
        `segapp.transforms.to_rgb_uint8`), one record each, in the official format:

          segmentation: [H, W] bool, or an RLE dict (see output_mode)
          area: int, foreground pixels
          bbox: [x, y, w, h] floats (w, h measured between the outermost pixels' indices)
          predicted_iou, stability_score: floats
          point_coords: [[x, y]], the prompt point in image pixels
          crop_box: [x, y, w, h] floats of the crop the mask was found in

        An image where no mask passes the filters gives [] and a warning-level log line with
        `nothing_found_hint()` (the first time for this generator; later ones at debug level,
        so that a batch of empty images does not repeat it).
        """
        image = to_rgb_uint8(image)
        orig_hw = (int(image.shape[0]), int(image.shape[1]))
        data = self._generate_masks(image)
        records = self._records(data, orig_hw)
        if not records:
            logger.log(logging.DEBUG if self._warned_empty else logging.WARNING, "%s", self.nothing_found_hint())
            self._warned_empty = True
        return records

    def nothing_found_hint(self) -> str:
        """One line for an image where no mask was kept: the model, and the filters to lower."""
        label = model_info(self.predictor.model).label
        filters = []
        if self.pred_iou_thresh > 0.0:
            filters.append(f"pred_iou_thresh={self.pred_iou_thresh:g}")
        if self.stability_score_thresh > 0.0:
            filters.append(f"stability_score_thresh={self.stability_score_thresh:g}")
        if not filters:
            return f"no masks found by {label} (score filters off): the image may hold no objects it knows"
        return (f"no masks found by {label}: no mask passed {' and '.join(filters)}; lower "
                f"{'them' if len(filters) > 1 else 'it'} to keep more")

    # ------------------------------------------------------------------ crops
    def _generate_masks(self, image: np.ndarray) -> MaskData:
        """All kept masks as MaskData: low_res [N, h, w] logits (crop frame), boxes [N, 4]
        int64 and points [N, 2] (image frame), iou_preds, stability_score, crop_boxes [N, 4]."""
        orig_hw = image.shape[:2]
        crop_boxes, layer_idxs = generate_crop_boxes(orig_hw, self.crop_n_layers, self.crop_overlap_ratio)
        data = MaskData()
        for crop_box, layer_idx in zip(crop_boxes, layer_idxs):
            data.cat(self._process_crop(image, crop_box, layer_idx, orig_hw))
        if len(crop_boxes) > 1 and len(data):
            # Between crops, prefer the mask from the smaller crop.
            scores = 1 / box_area(data["crop_boxes"])
            keep = batched_nms(data["boxes"].float(), scores, torch.zeros(len(data), dtype=torch.int64),
                               self.crop_nms_thresh)
            data.filter(keep)
        return data

    def _process_crop(self, image: np.ndarray, crop_box: list[int], layer_idx: int,
                      orig_hw: tuple[int, int]) -> MaskData:
        x0, y0, x1, y1 = crop_box
        self.predictor.set_image(image[y0:y1, x0:x1])
        crop_hw = (y1 - y0, x1 - x0)
        # Grid points in crop pixels: float64 products, then float32 as the official ones.
        points = torch.as_tensor(self.point_grids[layer_idx] * np.array([crop_hw[1], crop_hw[0]]),
                                 dtype=torch.float32)
        data = MaskData()
        for (batch,) in batch_iterator(self.points_per_batch, points):
            data.cat(self._process_batch(batch, crop_hw, crop_box, orig_hw))
        self.predictor.reset_predictor()
        if len(data):
            keep = batched_nms(data["boxes"].float(), data["iou_preds"],
                               torch.zeros(len(data), dtype=torch.int64), self.box_nms_thresh)
            data.filter(keep)
        data["boxes"] = uncrop_boxes_xyxy(data["boxes"], crop_box)
        data["points"] = uncrop_points(data["points"], crop_box)
        data["crop_boxes"] = torch.tensor([crop_box], dtype=torch.int64).expand(len(data), 4).clone()
        logger.debug("crop %s: %d masks after NMS", crop_box, len(data))
        return data

    # ------------------------------------------------------------------ one batch of points
    def _process_batch(self, points: torch.Tensor, crop_hw: tuple[int, int], crop_box: list[int],
                       orig_hw: tuple[int, int]) -> MaskData:
        """points: [B, 2] float32 crop pixels -> the batch's surviving masks (crop frame)."""
        device = self.predictor.device
        in_points = self.predictor.transforms.coords_to_input(points.to(device), crop_hw, normalize=True)
        # Masks that the IoU filter will drop need no pixels: without m2m (which refines every
        # mask), the decoder skips their upscaling.
        floor = self.pred_iou_thresh if self.pred_iou_thresh > 0.0 and not self.use_m2m else None
        low_res, iou = self._decode(in_points, None, self.multimask_output, iou_floor=floor)
        per_point = low_res.shape[1]
        low_res, iou = low_res.flatten(0, 1), iou.flatten(0, 1)  # [B*C, h, w], [B*C]
        if self.use_m2m:
            # Decode each point again, single-mask, with its own mask as input.
            mask_input = low_res.clamp(-MASK_INPUT_CLAMP, MASK_INPUT_CLAMP)
            low_res, iou = self._decode(in_points.repeat_interleave(per_point, dim=0), mask_input, False)
            low_res, iou = low_res[:, 0], iou[:, 0]

        keep = torch.arange(len(iou), device=iou.device)
        if self.pred_iou_thresh > 0.0:
            keep = keep[iou > self.pred_iou_thresh]
        low_res = fill_holes_and_sprinkles(low_res[keep], self.predictor.mask_threshold,
                                           self.predictor.max_hole_area, self.predictor.max_sprinkle_area)
        # Low-res logits stay on the model's device (upsampling is cheaper there on a GPU).
        data = MaskData(low_res=low_res, iou_preds=iou[keep].cpu(),
                        points=points.repeat_interleave(per_point, dim=0)[keep.cpu()])
        if not len(data):
            data["stability_score"] = torch.empty(0)
            data["boxes"] = torch.empty(0, 4, dtype=torch.int64)
            return data

        stability, boxes, stable = self._measure(data["low_res"], crop_hw)
        data["stability_score"], data["boxes"] = stability, boxes
        if self.stability_score_thresh > 0.0:
            data.filter(stable)
        edge = is_box_near_crop_edge(data["boxes"], crop_box, [0, 0, orig_hw[1], orig_hw[0]])
        if edge.any():
            data.filter(~edge)
        return data

    def _decode(self, in_points: torch.Tensor, mask_input: torch.Tensor | None,
                multimask_output: bool, iou_floor: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One positive point per prompt, in chunks. in_points [M, 2] model pixels; mask_input
        [M, h, w] logits or None -> (low-res logits [M, C, h, w], iou predictions [M, C])."""
        step = self.points_per_batch
        if self.cpu_decode_chunk and self.predictor.device.type == "cpu":
            step = min(step, self._cpu_chunk())
        masks, ious = [], []
        for start in range(0, len(in_points), step):
            pts = in_points[start: start + step]
            labels = torch.ones(len(pts), 1, dtype=torch.int, device=pts.device)
            masks_in = None if mask_input is None else mask_input[start: start + step, None]
            out, iou = self.predictor.decode_low_res(pts[:, None], labels, mask_input=masks_in,
                                                     multimask_output=multimask_output, iou_floor=iou_floor)
            masks.append(out)
            ious.append(iou)
        return torch.cat(masks), torch.cat(ious)

    def _cpu_chunk(self) -> int:
        """Prompts per decoder call on CPU: [chunk, N, C] image tokens of ~CPU_DECODE_CHUNK_BYTES."""
        embed = self.predictor.get_image_embedding()  # [1, C, h, w]
        per_prompt = embed[0].numel() * 4  # float32 image tokens of one prompt
        return max(1, CPU_DECODE_CHUNK_BYTES // per_prompt)

    def _upsampled(self, low_res: torch.Tensor, out_hw: tuple[int, int]):
        """Yield (start, [n, H, W] logits) chunks of low_res [N, h, w] upsampled to out_hw
        bilinearly, exactly as the predictor upsamples its masks."""
        step = max(1, UPSAMPLE_CHUNK_PIXELS // (out_hw[0] * out_hw[1]))
        for start in range(0, len(low_res), step):
            chunk = low_res[start: start + step, None].float()
            yield start, F.interpolate(chunk, size=out_hw, mode="bilinear", align_corners=False)[:, 0].cpu()

    def _measure(self, low_res: torch.Tensor, crop_hw: tuple[int, int]):
        """Stability score and box of each mask, measured on its logits upsampled to the
        crop's resolution. low_res [N, h, w] -> (stability [N] float32, boxes [N, 4] int64
        XYXY crop frame, stable [N] bool). Boxes are computed for stable masks only (zeros else)."""
        n = len(low_res)
        stability = torch.empty(n, dtype=torch.float32)
        boxes = torch.zeros(n, 4, dtype=torch.int64)
        for start, up in self._upsampled(low_res, crop_hw):
            score = calculate_stability_score(up, self.mask_threshold, self.stability_score_offset)
            stability[start: start + len(up)] = score
            planes = up.numpy()
            for i in range(len(up)):
                if self.stability_score_thresh <= 0.0 or score[i] >= self.stability_score_thresh:
                    boxes[start + i] = torch.tensor(mask_to_box(planes[i] > self.mask_threshold))
        return stability, boxes, stability >= self.stability_score_thresh

    # ------------------------------------------------------------------ records
    def _records(self, data: MaskData, orig_hw: tuple[int, int]) -> list[dict[str, Any]]:
        """Binarise the kept masks at full image size and write the official records."""
        segmentations: list[Any] = [None] * len(data)
        areas = [0] * len(data)
        crop_boxes = data["crop_boxes"]
        for crop in torch.unique(crop_boxes, dim=0):
            rows = torch.nonzero((crop_boxes == crop).all(dim=1)).flatten()
            x0, y0, x1, y1 = (int(v) for v in crop)
            for start, up in self._upsampled(data["low_res"][rows], (y1 - y0, x1 - x0)):
                binary = (up > self.mask_threshold).numpy()
                for j, crop_mask in enumerate(binary):
                    full = np.zeros(orig_hw, dtype=bool)
                    full[y0:y1, x0:x1] = crop_mask
                    k = int(rows[start + j])
                    areas[k] = int(np.count_nonzero(crop_mask))
                    segmentations[k] = self._encode(full)
        data.to_numpy()
        records = []
        for k in range(len(segmentations)):
            records.append({
                "segmentation": segmentations[k],
                "area": areas[k],
                "bbox": box_xyxy_to_xywh(data["boxes"][k]).tolist(),
                "predicted_iou": float(data["iou_preds"][k]),
                "point_coords": [data["points"][k].tolist()],
                "stability_score": float(data["stability_score"][k]),
                "crop_box": box_xyxy_to_xywh(data["crop_boxes"][k]).tolist(),
            })
        return records

    def _encode(self, mask: np.ndarray):
        if self.output_mode == "binary_mask":
            return mask
        if self.output_mode == "coco_rle":
            return encode_rle(mask)
        return mask_to_rle(mask[None])[0]


def _check_grid(grid, index: int) -> np.ndarray:
    arr = np.asarray(grid)
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2 or len(arr) == 0:
        raise ValueError(f"point_grids[{index}] must be a non-empty [N, 2] array of xy, got shape {arr.shape}")
    if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
        raise ValueError(f"point_grids[{index}] must hold xy in [0, 1] (relative to the crop)")
    return arr


# The official class name, so `from segapp import SAM2AutomaticMaskGenerator` ports code unchanged.
SAM2AutomaticMaskGenerator = AutomaticMaskGenerator
