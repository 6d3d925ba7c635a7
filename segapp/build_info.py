"""What a built model is, kept beside the `nn.Module` rather than on it.

`segapp.build_model(...)` returns the model itself, as the official `build_sam2` does, so code
written for SAM 2 ports unchanged; the settings that belong to the build and not to the
network (which config, a label for messages, which parts carry trained weights, the compute
dtype, predictor presets such as box zoom) live in a frozen `ModelInfo` that `build_model`
records for that model object. Predictors and the CLI read it with `model_info(model)`:

    model = segapp.build_model("segapp_small")
    segapp.model_info(model).box_zoom        # 3.0: ImagePredictor's default for this model

A model built some other way (`SAM2Model(...)` by hand, a copy) has the defaults: every part
trained, fp32, no box zoom. `set_model_info` records one for it (or replaces the recorded one).
The record is weak: it goes when the model does.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, fields
from typing import Any, Mapping

import torch

# The predictor presets a config may set under its top-level `predictor:` key.
PRESET_KEYS = ("box_zoom",)


@dataclass(frozen=True)
class ModelInfo:
    """The build settings of one model.

    name: the config name or YAML path it was built from ("" when not built by build_model).
    label: how messages name it, e.g. "segapp_small (bundled)" or "sam2.1_hiera_t (x.pt)".
    trained_parts: the parts that carry trained weights (None: all of them; see
      segapp.bundled.trained_parts); the video predictor refuses a model whose memory is untrained.
    compute_dtype: the predictors' autocast dtype (torch.float32: none; torch.bfloat16).
    box_zoom: ImagePredictor's default: > 0 answers a box alone from a crop this many box
      sides wide around it (see ImagePredictor); 0 sees the whole image, as SAM 2.
    """

    name: str = ""
    label: str = "the model"
    trained_parts: tuple[str, ...] | None = None
    compute_dtype: torch.dtype = torch.float32
    box_zoom: float = 0.0

    def __post_init__(self) -> None:
        if self.compute_dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"compute_dtype must be torch.float32 or torch.bfloat16, got {self.compute_dtype}")
        if not self.box_zoom >= 0:
            raise ValueError(f"box_zoom must be >= 0, got {self.box_zoom}")
        object.__setattr__(self, "box_zoom", float(self.box_zoom))
        if self.trained_parts is not None:
            object.__setattr__(self, "trained_parts", tuple(self.trained_parts))

    @staticmethod
    def presets(section: Mapping[str, Any] | None, source: str) -> dict[str, Any]:
        """A config's `predictor:` section -> ModelInfo keyword arguments; ValueError naming
        an unknown key (source: the config, for the message)."""
        section = dict(section or {})
        unknown = sorted(set(section) - set(PRESET_KEYS))
        if unknown:
            raise ValueError(f"config {source}: unknown predictor preset(s) {', '.join(unknown)}; "
                             f"known: {', '.join(PRESET_KEYS)}")
        return section


_RECORDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def model_info(model: torch.nn.Module) -> ModelInfo:
    """The ModelInfo recorded for `model` by build_model or set_model_info (defaults otherwise)."""
    return _RECORDS.get(model, _DEFAULT)


def set_model_info(model: torch.nn.Module, info: ModelInfo | None = None, **changes) -> ModelInfo:
    """Record `info` for `model` (or, with keyword changes only, the current record with those
    fields changed, e.g. `set_model_info(model, trained_parts=None)`); returns the record."""
    if info is None:
        known = {f.name for f in fields(ModelInfo)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise TypeError(f"unknown ModelInfo field(s) {', '.join(unknown)}; fields: {', '.join(sorted(known))}")
        current = model_info(model)
        info = ModelInfo(**{**{f: getattr(current, f) for f in known}, **changes})
    elif changes:
        raise TypeError("give a ModelInfo or keyword changes, not both")
    _RECORDS[model] = info
    return info


_DEFAULT = ModelInfo()

__all__ = ["ModelInfo", "model_info", "set_model_info", "PRESET_KEYS"]
