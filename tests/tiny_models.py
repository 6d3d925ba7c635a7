"""The tiny random test model (config test_tiny) as the tests build it, in one place.

Random weights make the object-score head say "no object" on most frames, so every tracked mask
would be empty and a video test would compare nothing; the tracking tests raise that head's bias.
Two habits stand in the tests and are kept apart here, since they give different models: `fill`
sets the bias to a value (5.0: present, with the masks' own logits still deciding their pixels),
`add` raises the random bias by an amount (20.0: present on every frame).
"""
from __future__ import annotations

import torch

import segapp


def tiny_model(seed: int = 0, **kwargs) -> torch.nn.Module:
    """test_tiny on the CPU, its random weights drawn after torch.manual_seed(seed); kwargs go to
    segapp.build_model (bf16, overrides, ...)."""
    torch.manual_seed(seed)
    return segapp.build_model("test_tiny", device="cpu", **kwargs)


def object_score_bias(model: torch.nn.Module) -> torch.Tensor:
    """The bias of the object-score head's last layer (the head is an MLP or one Linear)."""
    head = model.mask_decoder.pred_obj_score_head
    return (head.layers[-1] if hasattr(head, "layers") else head).bias


def say_objects_present(model: torch.nn.Module, *, fill: float | None = None,
                        add: float | None = None) -> torch.nn.Module:
    """Bias `model`'s object-score head towards "object present", in place: set the bias to `fill`
    or raise it by `add` (exactly one of the two). Returns the model."""
    if (fill is None) == (add is None):
        raise ValueError(f"give exactly one of fill and add, got fill={fill!r}, add={add!r}")
    with torch.no_grad():
        bias = object_score_bias(model)
        if fill is not None:
            bias.fill_(fill)
        else:
            bias += add
    return model


def tracking_model(*, fill: float | None = None, add: float | None = None, seed: int = 0) -> torch.nn.Module:
    """tiny_model(seed) whose object-score head says "object present" (see say_objects_present)."""
    return say_objects_present(tiny_model(seed), fill=fill, add=add)
