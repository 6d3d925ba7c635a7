"""Augmentation of clips (`segapp train-video`): the settings (`ClipAugment`) and the affine
geometry of real-video augmentation and of pseudo-clip drift.

Every frame of a clip is resized to S x S first, then warped by an affine map in normalised
coordinates ([-1, 1] over the S x S grid) with `F.affine_grid` + `F.grid_sample`. The masks
are sampled on the same grid as float images and thresholded at 0.5, so a warped mask stays on
the pixels of its warped object. Outside the source the image is the mean pixel (0 after
normalisation) and the masks are empty.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from segapp.transforms import PIXEL_MEAN

# Warped masks are kept where at least half a pixel is covered (as resized masks are).
MASK_WARP_THRESHOLD = 0.5


@dataclass(frozen=True)
class ClipAugment:
    """Augmentation of clips: one flip, affine map and colour jitter per clip (real videos and
    the first frame of pseudo-clips), plus the per-frame drift of pseudo-clips."""

    hflip_prob: float = 0.5
    scale_range: tuple[float, float] = (0.8, 1.25)  # >1 zooms in
    max_rotation: float = 10.0  # degrees
    max_translation: float = 0.1  # fraction of the side
    colour_prob: float = 0.8
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.3
    # Pseudo-clips: per-frame steps, accumulated (so the motion drifts, as objects move).
    step_translation: float = 0.04
    step_scale: float = 0.04
    step_rotation: float = 4.0

    @classmethod
    def none(cls) -> "ClipAugment":
        """No augmentation of real videos; pseudo-clips keep their drift (it makes the motion)."""
        return cls(hflip_prob=0.0, scale_range=(1.0, 1.0), max_rotation=0.0, max_translation=0.0, colour_prob=0.0)


def affine_matrix(scale: float = 1.0, rotation_deg: float = 0.0, tx: float = 0.0, ty: float = 0.0,
                  flip: bool = False) -> np.ndarray:
    """[3, 3] forward map of normalised coordinates: flip x, then scale and rotate about the
    centre, then translate by (tx, ty) (fractions of the half side, as [-1, 1] coordinates)."""
    a = math.radians(rotation_deg)
    flip_m = np.diag([-1.0 if flip else 1.0, 1.0, 1.0])
    rot = np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])
    m = np.diag([scale, scale, 1.0]) @ rot @ flip_m
    m[0, 2], m[1, 2] = tx, ty
    return m


def warp(images: torch.Tensor, masks: torch.Tensor, forward: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply forward maps to frames and their masks.

    images: [T, 3, S, S] in [0, 1] (not normalised); masks: [T, K, S, S] bool;
    forward: [T, 3, 3] (output = forward @ input, normalised coordinates).
    `affine_grid` wants, for each output pixel, where to sample the input: the inverse map.
    """
    t, _, h, w = images.shape
    theta = torch.from_numpy(np.linalg.inv(forward)[:, :2, :]).float()
    grid = F.affine_grid(theta, [t, 1, h, w], align_corners=False)
    mean = torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1)
    # Sampling (image - mean) with zero padding fills the outside with the mean pixel.
    out = F.grid_sample(images - mean, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + mean
    if masks.shape[1]:
        m = F.grid_sample(masks.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        masks = m > MASK_WARP_THRESHOLD
    return out.clamp(0, 1), masks


def random_affine(aug: ClipAugment, rng: np.random.Generator) -> np.ndarray:
    """One random augmentation map of a clip (flip, scale, rotation, translation)."""
    lo, hi = np.log(aug.scale_range[0]), np.log(aug.scale_range[1])
    return affine_matrix(scale=float(np.exp(rng.uniform(lo, hi))),
                         rotation_deg=float(rng.uniform(-aug.max_rotation, aug.max_rotation)),
                         tx=float(rng.uniform(-1, 1) * 2 * aug.max_translation),
                         ty=float(rng.uniform(-1, 1) * 2 * aug.max_translation),
                         flip=bool(rng.random() < aug.hflip_prob))


def drift(num_frames: int, aug: ClipAugment, rng: np.random.Generator, start: np.ndarray) -> np.ndarray:
    """[T, 3, 3] maps of a pseudo-clip: frame 0 is `start`, each next frame adds a small random
    step (a constant velocity plus noise, so the motion is smooth but not straight)."""
    def step(strength: float) -> float:
        return float(rng.uniform(-1, 1) * strength)

    velocity = (step(aug.step_translation), step(aug.step_translation), step(aug.step_scale), step(aug.step_rotation))
    maps = [start]
    for _ in range(num_frames - 1):
        tx, ty = velocity[0] + step(aug.step_translation / 2), velocity[1] + step(aug.step_translation / 2)
        scale = math.exp(velocity[2] + step(aug.step_scale / 2))
        rot = velocity[3] + step(aug.step_rotation / 2)
        maps.append(affine_matrix(scale=scale, rotation_deg=rot, tx=2 * tx, ty=2 * ty) @ maps[-1])
    return np.stack(maps)
