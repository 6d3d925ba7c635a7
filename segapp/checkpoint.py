"""Checkpoint loading and saving as pure steps.

Official SAM 2 checkpoints are `torch.save({"model": state_dict})` files. They load
strictly, with `weights_only=True` (no code runs from the file), after a pure key remapping.
segapp writes its own weights as safetensors.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

logger = logging.getLogger(__name__)

# Official module prefixes -> segapp's. Everything else keeps its official name.
OFFICIAL_PREFIXES = {
    "sam_prompt_encoder.": "prompt_encoder.",
    "sam_mask_decoder.": "mask_decoder.",
}


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read or does not fit the model."""


def remap_official_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename official SAM 2 keys to segapp's (pure: returns a new dict, input untouched)."""
    return _rename_prefixes(state_dict, list(OFFICIAL_PREFIXES.items()))


def to_official_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of `remap_official_keys`, for exporting in the official layout."""
    return _rename_prefixes(state_dict, [(new, old) for old, new in OFFICIAL_PREFIXES.items()])


def _rename_prefixes(state_dict: Mapping[str, torch.Tensor], renames: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """A new dict whose keys have the first matching `(prefix, replacement)` applied."""
    out = {}
    for key, value in state_dict.items():
        for prefix, replacement in renames:
            if key.startswith(prefix):
                key = replacement + key[len(prefix):]
                break
        out[key] = value
    return out


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read the tensors of a checkpoint: a `.safetensors` file, or a torch file holding
    either `{"model": state_dict}` (official format) or a bare state dict."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # safetensors raises several types for corrupt files
            raise CheckpointError(f"cannot read safetensors checkpoint {path}: {err}") from err
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or foreign files
        raise CheckpointError(
            f"cannot read checkpoint {path}: {err}. Is it a complete SAM 2 .pt file? "
            "(a partial download is corrupt: run `segapp download` again to resume it)"
        ) from err
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict (expected {{'model': state_dict}})")
    return obj


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load with strict=True semantics and an error naming every missing and unexpected key
    and every shape mismatch (a checkpoint for another config, usually)."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    mismatched = sorted(
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state_dict) if own[k].shape != state_dict[k].shape
    )
    if missing or unexpected or mismatched:
        parts = [f"{source} does not fit the model (is it for another config?)"]
        for title, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                            ("shape mismatches", mismatched)):
            if keys:
                shown = ", ".join(keys[:20]) + (f", ... ({len(keys) - 20} more)" if len(keys) > 20 else "")
                parts.append(f"{title} ({len(keys)}): {shown}")
        raise CheckpointError("\n  ".join(parts))
    model.load_state_dict(state_dict, strict=True)


def load_checkpoint(model: nn.Module, path: str | Path) -> nn.Module:
    """Load an official `.pt` or a segapp `.safetensors` checkpoint into `model`, strictly."""
    state = remap_official_keys(read_state_dict(path))
    load_state_dict_strict(model, state, source=str(path))
    logger.info("loaded %d tensors from %s", len(state), path)
    return model


def save_safetensors(model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write the model's weights (segapp key names) as safetensors, atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(tensors, str(tmp), metadata=metadata or {})
    tmp.replace(path)
    return path
