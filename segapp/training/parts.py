"""What a training run trains: the parts of a SAM2Model, which of them a run may freeze, and
the AdamW parameter groups over the trained ones.

A part is a top-level child of SAM2Model (`image_encoder`, `memory_attention`, ...). The image
path (`IMAGE_PATH_PARTS`, shared with the bundled model's metadata rule) is what `segapp train`
trains; `MEMORY_PARTS` are what only `segapp train-video` trains.
"""
from __future__ import annotations

from typing import Callable, Iterable

from torch import nn

from segapp.bundled import IMAGE_PATH_PARTS

__all__ = ["FREEZABLE", "IMAGE_PATH_PARTS", "MEMORY_PARTS", "check_freeze", "decay_groups", "part_of"]

FREEZABLE = ("image_encoder", "prompt_encoder", "mask_decoder")
# Every other top-level part of a SAM2Model is video memory.
MEMORY_PARTS = ("memory_attention", "memory_encoder", "obj_ptr_proj", "obj_ptr_tpos_proj", "maskmem_tpos_enc",
                "no_mem_pos_enc", "no_obj_ptr", "no_obj_embed_spatial", "mask_downsample")
# Layers whose weights get weight decay; biases, norms, embeddings and position tables keep their scale.
DECAY_TYPES = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)


def part_of(name: str) -> str:
    """The top-level part of a parameter name ("memory_attention.layers.0..." -> "memory_attention")."""
    return name.split(".", 1)[0]


def check_freeze(freeze: Iterable[str]) -> tuple[str, ...]:
    """`freeze` as a tuple; ValueError naming the parts that cannot be frozen."""
    freeze = tuple(freeze)
    unknown = sorted(set(freeze) - set(FREEZABLE))
    if unknown:
        raise ValueError(f"cannot freeze {unknown}; choose from {FREEZABLE}")
    return freeze


def decay_groups(model: nn.Module, trained: Iterable[str], lr: float, weight_decay: float,
                 scaled: Callable[[str], bool], lr_scale: float) -> list[dict]:
    """AdamW groups over the parameters of the `trained` parts (every other parameter gets
    requires_grad False): weight decay on the weights of DECAY_TYPES layers only; the parts for
    which `scaled(part)` holds at lr * lr_scale. Groups are ordered by (scaled, decay), so
    that an optimizer state saved by a run loads into the next one."""
    trained = set(trained)
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            part = part_of(f"{module_name}.{name}" if module_name else name)
            param.requires_grad_(part in trained)
            if part in trained:
                decay = isinstance(module, DECAY_TYPES) and name == "weight"
                groups.setdefault((scaled(part), decay), []).append(param)
    return [{"params": params, "lr": lr * (lr_scale if is_scaled else 1.0),
             "weight_decay": weight_decay if decay else 0.0}
            for (is_scaled, decay), params in sorted(groups.items())]
