"""Geometry between user images and the square model input, in one place.

The model sees the image resized (not padded) to image_size x image_size, so x and y
scale independently; masks come back at 1/4 of the model input and are resized to the
original image size.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# ImageNet statistics the official checkpoints were trained with (RGB, 0..1 scale).
PIXEL_MEAN = (0.485, 0.456, 0.406)
PIXEL_STD = (0.229, 0.224, 0.225)


def to_rgb_uint8(image) -> np.ndarray:
    """Any common image form -> [H, W, 3] uint8 RGB.

    Accepts NumPy arrays (HxW gray, HxWx1, HxWx3 RGB, HxWx4 RGBA; uint8, uint16, bool, or
    float in [0, 1]) and PIL images (any mode; EXIF orientation applied, as viewers show it).
    """
    try:
        from PIL import Image, ImageOps
    except ImportError:  # pragma: no cover - Pillow is a dependency
        Image = None
    if Image is not None and isinstance(image, Image.Image):
        image = ImageOps.exif_transpose(image)
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(image).astype(np.float64)
            peak = 65535.0 if arr.max() > 255 else 255.0
            return to_rgb_uint8(np.clip(arr / peak, 0, 1))
        if image.mode != "RGB":
            if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                image = image.convert("RGBA")
            image = image.convert("RGB")
        return np.asarray(image)
    if isinstance(image, torch.Tensor):
        raise TypeError("pass images as NumPy arrays [H, W, 3] uint8 RGB or PIL images, not tensors")
    if not isinstance(image, np.ndarray):
        raise TypeError(f"unsupported image type {type(image).__name__}; expected a NumPy array or PIL image")
    arr = image
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"image must be [H, W], [H, W, 1], [H, W, 3] or [H, W, 4]; got shape {image.shape}")
    if arr.shape[2] == 4:
        arr = arr[..., :3]
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"image is empty (shape {image.shape})")
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if arr.dtype == np.uint16:
        return (arr.astype(np.float32) / 257.0).round().astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ValueError("image has NaN or infinite values")
        if arr.min() < 0 or arr.max() > 1:
            raise ValueError("float images must hold values in [0, 1]")
        return (arr * 255.0).round().astype(np.uint8)
    raise ValueError(f"unsupported image dtype {arr.dtype}")


def box_window(box_xyxy, side: float, centre: tuple[float, float], hw: tuple[int, int]
               ) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) integer pixels of a square of `side` around `centre`, cut at the border
    of an image of size hw = (H, W) and widened where needed to hold the box (x0, y0, x1, y1)
    whole. The crop of box zoom (ImagePredictor) and of object-centred training crops."""
    h, w = hw
    bx0, by0, bx1, by1 = (float(v) for v in box_xyxy)
    cx, cy = centre
    x0 = max(int(np.floor(min(cx - side / 2, bx0))), 0)
    y0 = max(int(np.floor(min(cy - side / 2, by0))), 0)
    x1 = min(int(np.ceil(max(cx + side / 2, bx1))), w)
    y1 = min(int(np.ceil(max(cy + side / 2, by1))), h)
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


class ImageTransforms:
    """Resizing, normalisation and coordinate/mask mapping for a model of side `image_size`."""

    def __init__(self, image_size: int) -> None:
        self.image_size = image_size

    def to_input(self, images: list[np.ndarray], device: torch.device) -> torch.Tensor:
        """[H, W, 3] uint8 RGB images -> [B, 3, S, S] normalised float (bilinear, antialiased)."""
        out = []
        mean = torch.tensor(PIXEL_MEAN, device=device).view(3, 1, 1)
        std = torch.tensor(PIXEL_STD, device=device).view(3, 1, 1)
        for image in images:
            # Arrays from PIL are read-only, and torch warns about tensors over read-only memory:
            # those are copied (uint8, small next to the float copy made just after).
            pixels = np.ascontiguousarray(image) if image.flags.writeable else np.array(image, order="C")
            x = torch.as_tensor(pixels, device=device).permute(2, 0, 1).float().div(255)
            x = F.interpolate(x[None], size=(self.image_size, self.image_size), mode="bilinear",
                              align_corners=False, antialias=True)[0]
            out.append((x - mean) / std)
        return torch.stack(out)

    def coords_to_input(self, coords: torch.Tensor, orig_hw: tuple[int, int], normalize: bool = True) -> torch.Tensor:
        """[..., 2] xy -> model-input pixels. With `normalize`, coords are pixels of the original
        image; otherwise they are already relative, in [0, 1]."""
        if normalize:
            h, w = orig_hw
            coords = coords / coords.new_tensor([float(w), float(h)])
        return coords * self.image_size

    def boxes_to_input(self, boxes: torch.Tensor, orig_hw: tuple[int, int], normalize: bool = True) -> torch.Tensor:
        """[B, 4] xyxy -> [B, 2, 2] corner points in model-input pixels."""
        return self.coords_to_input(boxes.reshape(-1, 2, 2), orig_hw, normalize)

    @staticmethod
    def masks_to_image(low_res: torch.Tensor, orig_hw: tuple[int, int]) -> torch.Tensor:
        """[B, C, h, w] logits -> [B, C, H, W] at the original image size (bilinear)."""
        return F.interpolate(low_res.float(), size=tuple(orig_hw), mode="bilinear", align_corners=False)
