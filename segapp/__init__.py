"""segapp: SAM 2-style promptable segmentation for images and video.

Public API (the official SAM 2 interface, so existing code ports by changing an import):

    import segapp
    model = segapp.build_model("sam2.1_hiera_t", "checkpoints/sam2.1_hiera_tiny.pt")
    predictor = segapp.ImagePredictor(model)
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# name -> module that defines it; imported on first use so `segapp --help` stays fast.
_EXPORTS = {
    "build_model": "segapp.build",
    "load_checkpoint": "segapp.checkpoint",
    "ModelInfo": "segapp.build_info",
    "model_info": "segapp.build_info",
    "set_model_info": "segapp.build_info",
    "ImagePredictor": "segapp.image_predictor",
    "SAM2ImagePredictor": "segapp.image_predictor",
    "AutomaticMaskGenerator": "segapp.automatic_mask_generator",
    "SAM2AutomaticMaskGenerator": "segapp.automatic_mask_generator",
    "build_video_predictor": "segapp.video.predictor",
    "VideoPredictor": "segapp.video.predictor",
    "SAM2VideoPredictor": "segapp.video.predictor",
    "StreamTracker": "segapp.video.stream",
    "VideoAutoTracker": "segapp.video.auto_tracker",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'segapp' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
