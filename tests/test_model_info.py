"""ModelInfo: what build_model knows about a model (config, label, trained parts, compute dtype,
predictor presets), recorded beside the nn.Module rather than as attributes on it."""
from __future__ import annotations

import pytest
import torch

import segapp
from segapp.bundled import ImageOnlyModelError
from segapp.build_info import ModelInfo, model_info, set_model_info


@pytest.fixture(scope="module")
def tiny():
    return segapp.build_model("test_tiny", device="cpu")


def test_build_model_returns_the_module_and_records_its_info(tiny):
    assert isinstance(tiny, torch.nn.Module)
    info = segapp.model_info(tiny)
    assert info == ModelInfo(name="test_tiny", label="test_tiny", trained_parts=None,
                             compute_dtype=torch.float32, box_zoom=0.0)
    for attr in ("config_name", "model_label", "trained_parts", "compute_dtype", "box_zoom"):
        assert not hasattr(tiny, attr), attr
    bf16 = segapp.build_model("test_tiny", device="cpu", bf16=True)
    assert model_info(bf16).compute_dtype == torch.bfloat16 and model_info(tiny).compute_dtype == torch.float32


def test_box_zoom_preset_comes_from_the_configs_predictor_section():
    small = segapp.build_model("segapp_small", device="cpu")
    assert model_info(small).box_zoom == 3.0 and segapp.ImagePredictor(small).box_zoom == 3.0
    two = segapp.build_model("test_tiny", device="cpu", overrides=["predictor.box_zoom=2"])
    assert model_info(two).box_zoom == 2.0 and segapp.ImagePredictor(two).box_zoom == 2.0


def test_bad_presets_are_named():
    with pytest.raises(ValueError, match="box_zoom must be >= 0"):
        segapp.build_model("test_tiny", device="cpu", overrides=["predictor.box_zoom=-1"])
    with pytest.raises(ValueError, match="unknown predictor preset.*zoom; known: box_zoom"):
        segapp.build_model("test_tiny", device="cpu", overrides=["+predictor.zoom=1"])
    # A config written for the old layout says where the setting went.
    with pytest.raises(ValueError, match="move it from `model:` to a top-level `predictor:`"):
        segapp.build_model("test_tiny", device="cpu", overrides=["+model.box_zoom=3"])


def test_models_built_by_hand_get_the_defaults_and_can_be_given_info():
    net = torch.nn.Linear(2, 2)
    assert model_info(net) == ModelInfo()
    info = set_model_info(net, label="my net", trained_parts=("image_encoder",))
    assert model_info(net) is info and info.label == "my net" and info.trained_parts == ("image_encoder",)
    with pytest.raises(TypeError, match="unknown ModelInfo field.*labels"):
        set_model_info(net, labels="x")
    with pytest.raises(ValueError, match="compute_dtype"):
        ModelInfo(compute_dtype=torch.float16)


def test_video_predictor_reads_trained_parts_and_label_from_the_info():
    model = segapp.build_model("test_tiny", device="cpu")
    set_model_info(model, label="my tiny", trained_parts=("image_encoder", "mask_decoder"))
    with pytest.raises(ImageOnlyModelError, match="^my tiny is trained for images only"):
        segapp.VideoPredictor(model)
    set_model_info(model, trained_parts=None)
    segapp.VideoPredictor(model)  # every part trained: accepted
