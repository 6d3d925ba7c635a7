"""ImagePredictor: the official SAM2ImagePredictor interface over segapp's model.

Two layers, as SAM v1's predictor: a NumPy/PIL convenience layer (`set_image`, `predict`,
...) that validates input and returns NumPy arrays, over a public tensor core
(`prompts_to_input`, `predict_torch`, `decode_low_res`) that works in model-input
coordinates and can decode many prompts in one decoder call.
"""
from __future__ import annotations

import contextlib
import logging
from typing import NamedTuple, Sequence

import numpy as np
import torch

from segapp.build_info import model_info
from segapp.modeling.sam2 import ImageEmbedding, SAM2Model
from segapp.postprocess import fill_holes_and_sprinkles
from segapp.prompts import check_boxes, check_finite, check_points
from segapp.transforms import ImageTransforms, box_window, to_rgb_uint8

logger = logging.getLogger(__name__)

# Low-resolution logits are clamped to this range before they are returned, as the
# official predictor does, so that feeding them back as mask input stays well-scaled.
LOW_RES_LOGIT_CLAMP = 32.0
# Box zoom: the smallest crop side in image pixels, so that tiny boxes keep some context.
ZOOM_MIN_SIDE = 64
# Box zoom: crops embedded and decoded together in one batch (bounds the batch's activations:
# about 25 MB a crop for segapp_small at 384 px).
ZOOM_BATCH = 8


class ModelPrompts(NamedTuple):
    """Prompts in model-input pixels, as `ImagePredictor.predict_torch` takes them (None: not
    given). point_coords [B, N, 2] float, point_labels [B, N] int, boxes [B, 4] xyxy,
    mask_input [B, 1, 4h, 4w] low-res logits."""

    point_coords: torch.Tensor | None
    point_labels: torch.Tensor | None
    boxes: torch.Tensor | None
    mask_input: torch.Tensor | None


class ImagePredictor:
    """Computes an image's embedding once, then predicts masks for prompts on it.

    Args:
      model: a SAM2Model (see `segapp.build_model`).
      mask_threshold: logit threshold for binary masks.
      max_hole_area, max_sprinkle_area: if > 0, fill holes / remove islands up to this
        many pixels in the low-resolution masks before upsampling.
      box_zoom: answer box-only prompts from a crop around each box, this many times the box's
        longer side (at least ZOOM_MIN_SIDE px), embedded on its own; 0 turns it off. Default:
        the model's `box_zoom` (0 for the official models, on for segapp_small).
      zoom_batch: fast path of box zoom: crops embedded and decoded together, as one batch
        through the encoder and one through the decoder (see `_predict_zoomed`); 1 is the
        plain path, one crop at a time, with the same masks up to float rounding.
    """

    def __init__(self, model: SAM2Model, mask_threshold: float = 0.0, max_hole_area: float = 0.0,
                 max_sprinkle_area: float = 0.0, box_zoom: float | None = None,
                 zoom_batch: int = ZOOM_BATCH) -> None:
        self.model = model
        self.mask_threshold = mask_threshold
        self.max_hole_area = max_hole_area
        self.max_sprinkle_area = max_sprinkle_area
        self.box_zoom = float(model_info(model).box_zoom if box_zoom is None else box_zoom)
        if self.box_zoom < 0:
            raise ValueError(f"box_zoom must be >= 0, got {box_zoom}")
        if zoom_batch < 1:
            raise ValueError(f"zoom_batch must be >= 1 (1: one crop at a time), got {zoom_batch}")
        self.zoom_batch = int(zoom_batch)
        self._transforms = ImageTransforms(model.image_size)
        self.reset_predictor()

    # ------------------------------------------------------------------ state
    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def is_image_set(self) -> bool:
        return self._embedding is not None

    @property
    def embedding(self) -> ImageEmbedding | None:
        """The current image(s)' embedding (image_embed [B, C, h, w] and the high-resolution
        features, float32), or None before `set_image`. Read-only: `set_image` replaces it."""
        return self._embedding

    @property
    def transforms(self) -> ImageTransforms:
        """The geometry between the images and the square model input (coordinates, boxes,
        masks), for callers that build prompts in model-input pixels for `decode_low_res`."""
        return self._transforms

    @property
    def embedding_nbytes(self) -> int:
        """Bytes held by the current image embedding and its high-resolution features
        (0 before set_image): what a cached embedding costs, for memory budgets."""
        if self._embedding is None:
            return 0
        return self._embedding.image_embed.nbytes + sum(f.nbytes for f in self._embedding.high_res_feats)

    @property
    def _is_image_set(self) -> bool:  # official attribute name
        return self.is_image_set

    @property
    def _features(self) -> dict | None:
        """Official layout of the cached features: {"image_embed", "high_res_feats"}."""
        if self._embedding is None:
            return None
        return {"image_embed": self._embedding.image_embed, "high_res_feats": self._embedding.high_res_feats}

    @property
    def _orig_hw(self) -> list[tuple[int, int]] | None:
        return self._image_hw

    def reset_predictor(self) -> None:
        """Forget the current image(s) and their embedding."""
        self._embedding: ImageEmbedding | None = None
        self._image_hw: list[tuple[int, int]] | None = None
        self._images: list[np.ndarray] | None = None  # the RGB images, for box zoom
        self._is_batch = False

    def _autocast(self):
        dtype = model_info(self.model).compute_dtype
        if dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    # ------------------------------------------------------------------ images
    @torch.inference_mode()
    def set_image(self, image) -> None:
        """Embed one image: [H, W, 3] uint8 RGB array (gray, RGBA, 16-bit and float [0, 1]
        arrays are converted) or a PIL image (EXIF orientation applied)."""
        self._embed([to_rgb_uint8(image)], batch=False)

    @torch.inference_mode()
    def set_image_batch(self, image_list: Sequence) -> None:
        """Embed several images at once, for `predict_batch`."""
        if isinstance(image_list, np.ndarray) or not isinstance(image_list, (list, tuple)):
            raise TypeError("set_image_batch expects a list of images")
        if not image_list:
            raise ValueError("set_image_batch got an empty list")
        self._embed([to_rgb_uint8(im) for im in image_list], batch=True)

    def _embed(self, images: list[np.ndarray], batch: bool) -> None:
        self.reset_predictor()
        self._embedding = self._encode(images)
        self._image_hw = [tuple(int(s) for s in im.shape[:2]) for im in images]
        self._is_batch = batch
        self._images = images  # for box zoom, which may be turned on after set_image

    def _encode(self, images: list[np.ndarray]) -> ImageEmbedding:
        """The float32 embedding of [H, W, 3] uint8 RGB images (the model may run in bf16)."""
        inputs = self._transforms.to_input(images, self.device)
        with self._autocast():
            embedding = self.model.embed_images(inputs)
        if embedding.image_embed.dtype != torch.float32:
            embedding = ImageEmbedding(embedding.image_embed.float(), [f.float() for f in embedding.high_res_feats])
        return embedding

    def get_image_embedding(self) -> torch.Tensor:
        """[B, C, h, w] embedding of the current image(s) (C=256, h=w=image_size/16)."""
        self._require_image()
        return self._embedding.image_embed

    def _require_image(self) -> None:
        if self._embedding is None:
            raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")

    # ------------------------------------------------------------------ prompts (NumPy layer)
    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Predict masks for prompts on the current image.

        point_coords: [N, 2] (or [B, N, 2]) xy pixels of the image (or relative [0, 1] with
        normalize_coords=False); point_labels: [N] (or [B, N]): 1 foreground, 0 background,
        -1 padding (ignored; labels 2/3 are refused, see segapp.prompts).
        box: [4] (or [B, 4]) xyxy. mask_input: [1, 256, 256] (or [B, 1, 256, 256]) low-res
        logits from a previous call.
        Returns masks [C, H, W] (float32 0/1, or logits with return_logits), iou_predictions
        [C], low_res_masks [C, 256, 256]; with B prompts, each gains a leading B axis.
        """
        self._require_image()
        return self._predict_numpy(point_coords, point_labels, box, mask_input, multimask_output=multimask_output,
                                   return_logits=return_logits, normalize_coords=normalize_coords, img_idx=0)

    def predict_batch(
        self,
        point_coords_batch: Sequence | None = None,
        point_labels_batch: Sequence | None = None,
        box_batch: Sequence | None = None,
        mask_input_batch: Sequence | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
    ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        """`predict` for each image of `set_image_batch`; each argument is a list with one
        entry per image (or None). Returns lists of masks, ious and low-res logits."""
        self._require_image()
        if not self._is_batch:
            raise RuntimeError("predict_batch needs images set with .set_image_batch(...)")
        n = len(self._image_hw)
        for name, value in (("point_coords_batch", point_coords_batch), ("point_labels_batch", point_labels_batch),
                            ("box_batch", box_batch), ("mask_input_batch", mask_input_batch)):
            if value is not None and len(value) != n:
                raise ValueError(f"{name} has {len(value)} entries for {n} images")
        outputs = ([], [], [])
        for i in range(n):
            pick = lambda seq: None if seq is None else seq[i]  # noqa: E731
            result = self._predict_numpy(pick(point_coords_batch), pick(point_labels_batch), pick(box_batch),
                                         pick(mask_input_batch), multimask_output=multimask_output,
                                         return_logits=return_logits, normalize_coords=normalize_coords, img_idx=i)
            for out, r in zip(outputs, result):
                out.append(r)
        return outputs

    def _predict_numpy(self, point_coords, point_labels, box, mask_input, *, multimask_output: bool,
                       return_logits: bool, normalize_coords: bool, img_idx: int
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The NumPy layer of `predict` and `predict_batch`: prompts checked and moved to the
        model input (`prompts_to_input`), `predict_torch`, and the results as NumPy arrays."""
        prompts = self.prompts_to_input(point_coords=point_coords, point_labels=point_labels, box=box,
                                        mask_input=mask_input, normalize_coords=normalize_coords, img_idx=img_idx)
        masks, ious, low_res = self.predict_torch(**prompts._asdict(), multimask_output=multimask_output,
                                                  return_logits=return_logits, img_idx=img_idx)
        # As the official predictor: float32 arrays (binary masks hold 0.0 / 1.0), and the
        # prompt-batch axis dropped when there is a single prompt.
        to_np = lambda t: (t.squeeze(0) if t.shape[0] == 1 else t).float().cpu().numpy()  # noqa: E731
        return to_np(masks), to_np(ious), to_np(low_res)

    def prompts_to_input(self, *, point_coords=None, point_labels=None, box=None, mask_input=None,
                         normalize_coords: bool = True, img_idx: int = 0) -> ModelPrompts:
        """Check NumPy prompts on image `img_idx` (as `predict` takes them: pixels of that image,
        or relative with normalize_coords=False) and move them to the model input, for
        `predict_torch`. Raises ValueError naming a bad prompt (outside the image, wrong shape,
        unknown label). A single point set is repeated for every box."""
        self._require_image()
        h, w = self._image_hw[self._check_img_idx(img_idx)]
        coords = labels = boxes = masks = None
        if point_coords is not None:
            pc, pl = check_points(point_coords, point_labels, (h, w), normalize_coords)
            coords = self._transforms.coords_to_input(
                torch.as_tensor(pc, dtype=torch.float, device=self.device), (h, w), normalize_coords)
            labels = torch.as_tensor(pl, dtype=torch.int, device=self.device)
        elif point_labels is not None:
            raise ValueError("point_labels given without point_coords")
        if box is not None:
            bx = check_boxes(box, (h, w), normalize_coords)
            boxes = self._transforms.boxes_to_input(
                torch.as_tensor(bx, dtype=torch.float, device=self.device), (h, w), normalize_coords).reshape(-1, 4)
        if mask_input is not None:
            m = np.asarray(mask_input, dtype=np.float32)
            expected = self.model.prompt_encoder.mask_input_size
            if m.ndim == 3:
                m = m[None]
            if m.ndim != 4 or m.shape[1] != 1 or tuple(m.shape[2:]) != tuple(expected):
                raise ValueError(f"mask_input must have shape [1, {expected[0]}, {expected[1]}] (low_res_masks of a "
                                 f"previous prediction), got {np.shape(mask_input)}")
            check_finite(m, "mask_input")
            masks = torch.as_tensor(m, device=self.device)
        if coords is not None and boxes is not None and coords.shape[0] != boxes.shape[0]:
            if coords.shape[0] == 1:
                coords, labels = coords.expand(boxes.shape[0], -1, -1), labels.expand(boxes.shape[0], -1)
            else:
                raise ValueError(f"{coords.shape[0]} point sets for {boxes.shape[0]} boxes")
        return ModelPrompts(coords, labels, boxes, masks)

    def _check_img_idx(self, img_idx: int) -> int:
        n = len(self._image_hw)
        if not 0 <= img_idx < n:
            raise IndexError(f"img_idx {img_idx} is out of range: {n} image(s) set")
        return img_idx

    # ------------------------------------------------------------------ tensor core
    @torch.inference_mode()
    def predict_torch(
        self,
        *,
        point_coords: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        img_idx: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Predict masks for prompts already in model-input pixels (`prompts_to_input` makes
        them from NumPy prompts): the tensor core under `predict`, as SAM v1's `predict_torch`.

        point_coords [B, N, 2] float, point_labels [B, N] int (1, 0, -1 padding), boxes [B, 4]
        xyxy, mask_input [B, 1, 4h, 4w] low-res logits; img_idx: the image of `set_image_batch`.
        Box-only prompts are answered by box zoom when the predictor has it on.
        Returns (masks [B, C, H, W] at image size: bool, or float logits with return_logits;
        iou predictions [B, C]; low-res logits [B, C, 4h, 4w], clamped to +-LOW_RES_LOGIT_CLAMP).
        """
        self._require_image()
        img_idx = self._check_img_idx(img_idx)
        if self.box_zoom > 0 and boxes is not None and point_coords is None and mask_input is None:
            return self._predict_zoomed(boxes, multimask_output, return_logits, img_idx)
        return self._predict(point_coords, point_labels, boxes, mask_input, multimask_output,
                             return_logits=return_logits, img_idx=img_idx)

    @torch.inference_mode()
    def decode_low_res(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        img_idx: int = 0,
        iou_floor: float | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode prompts in model-input pixels without upsampling.

        iou_floor: compute masks only for prompts with an IoU prediction above it (the others'
        logits are all SKIPPED_MASK_LOGIT); for callers that discard low-IoU masks anyway.

        point_coords [B, N, 2], point_labels [B, N], boxes [B, 4], mask_input [B, 1, 4h, 4w].
        Returns (low-res logits [B, C, 4h, 4w] float32, iou predictions [B, C]).
        """
        self._require_image()
        return self._decode(self._embedding.select(img_idx), point_coords, point_labels, boxes, mask_input,
                            multimask_output, iou_floor)

    def _decode(self, embedding: ImageEmbedding, point_coords, point_labels, boxes, mask_input,
                multimask_output: bool, iou_floor: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """decode_low_res on a given embedding (of the current image, or of a box-zoom crop)."""
        points = None
        if boxes is not None:
            corners = boxes.reshape(-1, 2, 2)
            corner_labels = torch.tensor([[2, 3]], dtype=torch.int, device=corners.device).expand(corners.shape[0], 2)
            if point_coords is not None:
                points = (torch.cat([corners, point_coords], dim=1), torch.cat([corner_labels, point_labels], dim=1))
            else:
                points = (corners, corner_labels)
        elif point_coords is not None:
            points = (point_coords, point_labels)
        with self._autocast():
            out = self.model.decode(embedding, points, mask_input, multimask_output, iou_floor=iou_floor)
        return out.masks.float(), out.iou_pred.float()

    @torch.inference_mode()
    def _predict(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        img_idx: int = -1,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Official tensor-level predict: prompts in model-input pixels (boxes [B, 4] or [B, 2, 2]).
        Returns (masks [B, C, H, W] at image size, iou [B, C], low-res logits [B, C, 4h, 4w])."""
        img_idx = 0 if img_idx < 0 else img_idx
        low_res, iou = self.decode_low_res(point_coords, point_labels, boxes, mask_input, multimask_output, img_idx)
        cleaned = fill_holes_and_sprinkles(low_res, self.mask_threshold, self.max_hole_area, self.max_sprinkle_area)
        masks = self._transforms.masks_to_image(cleaned, self._image_hw[img_idx])
        if not return_logits:
            masks = masks > self.mask_threshold
        return masks, iou, low_res.clamp(-LOW_RES_LOGIT_CLAMP, LOW_RES_LOGIT_CLAMP)

    def zoom_window(self, box_xyxy: Sequence[float], img_idx: int = 0) -> tuple[int, int, int, int]:
        """The crop (x0, y0, x1, y1), image pixels, that box zoom uses for a box (x0, y0, x1, y1)
        in image pixels: a square `box_zoom` times the box's longer side (at least
        ZOOM_MIN_SIDE), centred on the box, cut at the image border, always holding the box."""
        bx0, by0, bx1, by1 = (float(v) for v in box_xyxy)
        side = max(self.box_zoom * max(bx1 - bx0, by1 - by0), ZOOM_MIN_SIDE)
        return box_window(box_xyxy, side, ((bx0 + bx1) / 2, (by0 + by1) / 2), self._image_hw[img_idx])

    @torch.inference_mode()
    def _predict_zoomed(self, boxes: torch.Tensor, multimask_output: bool, return_logits: bool, img_idx: int
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`_predict` for box-only prompts (boxes [B, 2, 2] in model-input pixels) with box zoom:
        each box is decoded on the embedding of its own crop; the crop's masks are pasted into
        the image (nothing outside the crop), and low-res logits are those of the whole image.

        The crops go through the encoder and the decoder `zoom_batch` at a time, as one batch each
        (every crop is resized to the model's input size, so they stack). On CPU a small model
        spends much of a crop's time in per-operator overhead and thread hand-offs, which a batch
        pays once; the arithmetic per crop is the same, so the masks are those of one crop at a
        time up to float rounding."""
        h, w = self._image_hw[img_idx]
        size = self.model.image_size
        scale = boxes.new_tensor([w / size, h / size])
        boxes_px = (boxes.reshape(-1, 2, 2) * scale).reshape(-1, 4).tolist()
        windows = [self.zoom_window(box, img_idx) for box in boxes_px]
        whole = [i for i, win in enumerate(windows) if win == (0, 0, w, h)]
        cropped = [i for i, win in enumerate(windows) if win != (0, 0, w, h)]
        parts: list[tuple[list[int], torch.Tensor, torch.Tensor, torch.Tensor]] = []
        if whole:  # the crop is the image: its embedding is there
            m, iou, low = self._predict(None, None, boxes.reshape(-1, 2, 2)[whole], None, multimask_output,
                                        return_logits=True, img_idx=img_idx)
            parts.append((whole, m, iou, low))
        for start in range(0, len(cropped), self.zoom_batch):
            rows = cropped[start: start + self.zoom_batch]
            parts.append((rows, *self._decode_crops([boxes_px[i] for i in rows], [windows[i] for i in rows],
                                                    multimask_output, img_idx)))
        order = torch.tensor([i for rows, *_ in parts for i in rows], device=self.device).argsort()
        masks, ious, low = (torch.cat([part[k] for part in parts])[order] for k in (1, 2, 3))
        return (masks if return_logits else masks > self.mask_threshold, ious,
                low.clamp(-LOW_RES_LOGIT_CLAMP, LOW_RES_LOGIT_CLAMP))

    def _decode_crops(self, boxes_px: list[list[float]], windows: list[tuple[int, int, int, int]],
                      multimask_output: bool, img_idx: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Boxes (image pixels) decoded on the embeddings of their crops `windows`, one batch:
        (logits [n, C, H, W] at image size, -LOW_RES_LOGIT_CLAMP outside each crop, ious [n, C],
        whole-image low-res logits [n, C, 4h, 4w], unclamped)."""
        h, w = self._image_hw[img_idx]
        image = self._images[img_idx]
        embedding = self._encode([np.ascontiguousarray(image[y0:y1, x0:x1]) for x0, y0, x1, y1 in windows])
        crop_boxes = torch.cat([
            self._transforms.boxes_to_input(
                torch.tensor([[b[0] - x0, b[1] - y0, b[2] - x0, b[3] - y0]], device=self.device), (y1 - y0, x1 - x0))
            for b, (x0, y0, x1, y1) in zip(boxes_px, windows)])
        crop_low, iou = self._decode(embedding, None, None, crop_boxes, None, multimask_output)
        crop_low = fill_holes_and_sprinkles(crop_low, self.mask_threshold, self.max_hole_area, self.max_sprinkle_area)
        m = torch.full((len(windows), crop_low.shape[1], h, w), -LOW_RES_LOGIT_CLAMP, device=self.device)
        for k, (x0, y0, x1, y1) in enumerate(windows):
            m[k, :, y0:y1, x0:x1] = self._transforms.masks_to_image(crop_low[k: k + 1], (y1 - y0, x1 - x0))[0]
        low = torch.nn.functional.interpolate(m, size=tuple(self.model.prompt_encoder.mask_input_size),
                                              mode="bilinear", align_corners=False, antialias=True)
        return m, iou, low


# The official class name, so `from segapp import SAM2ImagePredictor` ports code unchanged.
SAM2ImagePredictor = ImagePredictor
