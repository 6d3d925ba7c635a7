"""Example inputs for the demo: scikit-image's bundled sample photos (no network needed)
or, when scikit-image is missing, a generated picture. Never files from outside the package.

    names()                 # ["astronaut", "coffee", ...]
    load("coffee")          # [H, W, 3] uint8 RGB
    write_examples(folder)  # PNG files the UI lists as examples
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

# scikit-image sample photos that ship inside its wheel (others are fetched at run time).
SKIMAGE_SAMPLES = ("astronaut", "coffee", "chelsea", "rocket", "coins")
GENERATED = "shapes"


def synthetic_image(size: int = 256, seed: int = 0) -> np.ndarray:
    """[size, size, 3] uint8: a few flat-coloured shapes on a soft gradient, easy to segment."""
    import cv2

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    image = np.stack([90 + 60 * xx, 110 + 40 * yy, 140 - 30 * xx], axis=-1).astype(np.uint8)
    s = size / 256
    cv2.circle(image, (int(80 * s), int(90 * s)), int(45 * s), (230, 60, 50), -1)
    cv2.rectangle(image, (int(140 * s), int(40 * s)), (int(225 * s), int(120 * s)), (40, 170, 70), -1)
    triangle = (np.array([[60, 230], [130, 150], [200, 230]]) * s).astype(np.int32)
    cv2.fillPoly(image, [triangle], (240, 200, 40))
    noise = rng.normal(0, 3, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def names() -> list[str]:
    """Example names available here: scikit-image's sample photos if installed, and the
    generated picture."""
    try:
        import skimage.data  # noqa: F401
    except ImportError:
        return [GENERATED]
    return [*SKIMAGE_SAMPLES, GENERATED]


def load(name: str) -> np.ndarray:
    """[H, W, 3] uint8 RGB of an example by name."""
    if name == GENERATED:
        return synthetic_image()
    if name not in SKIMAGE_SAMPLES:
        raise ValueError(f"unknown example {name!r}; choose one of {', '.join(names())}")
    import skimage.data

    image = getattr(skimage.data, name)()
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3]).astype(np.uint8)


def write_examples(folder: str | Path) -> list[Path]:
    """Write every example as `<name>.png` into folder (created); returns the paths."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names():
        path = folder / f"{name}.png"
        if not path.is_file():
            Image.fromarray(load(name)).save(path)
        paths.append(path)
    return paths
