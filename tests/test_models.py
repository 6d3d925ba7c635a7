"""Configs, building and checkpoint loading."""
from __future__ import annotations

import gc

import pytest
import torch

import reference
import segapp
from segapp.build import compose_config, list_configs, resolve_config
from segapp.checkpoint import (CheckpointError, load_checkpoint, remap_official_keys, save_safetensors,
                               to_official_keys)

OFFICIAL = sorted(reference.REFERENCE_CONFIGS)


def test_bundled_configs_are_listed():
    names = list_configs()
    assert set(OFFICIAL) <= set(names) and "test_tiny" in names
    assert "sam2" not in names  # base/ holds shared parts, not models


@pytest.mark.parametrize("name", OFFICIAL + ["test_tiny"])
def test_every_config_composes_and_declares_image_size_once(name):
    cfg = compose_config(name, ["image_size=768"])
    assert cfg.model.image_size == 768 and cfg.model.prompt_encoder.image_size == 768
    assert cfg.model.mask_decoder.dynamic_multimask_via_stability is True  # reference default, visible


@pytest.mark.slow
@pytest.mark.parametrize("name", OFFICIAL)
def test_official_checkpoints_load_strictly(name, tmp_path):
    """Each official config loads a checkpoint in the official format, strictly."""
    path = reference.make_official_checkpoint(name, tmp_path / f"{name}.pt", seed=1)
    model = segapp.build_model(name, path, device="cpu")
    ref_sd = remap_official_keys(torch.load(path, weights_only=True)["model"])
    own = model.state_dict()
    assert set(own) == set(ref_sd)
    assert all(torch.equal(own[k], ref_sd[k]) for k in own)
    del model, own, ref_sd
    path.unlink()
    gc.collect()


def test_checkpoint_errors_name_the_keys(tmp_path):
    model = segapp.build_model("test_tiny", device="cpu")
    sd = to_official_keys(model.state_dict())
    sd.pop("image_encoder.trunk.pos_embed")
    sd["extra.weight"] = torch.zeros(1)
    torch.save({"model": sd}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(model, tmp_path / "bad.pt")
    assert "image_encoder.trunk.pos_embed" in str(err.value) and "extra.weight" in str(err.value)
    assert "missing keys (1)" in str(err.value) and "unexpected keys (1)" in str(err.value)

    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(model, tmp_path / "corrupt.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(model, tmp_path / "absent.pt")
    # A checkpoint of another config: shapes are named.
    other = segapp.build_model("test_tiny", device="cpu", overrides=["d_model=48"])
    torch.save({"model": to_official_keys(other.state_dict())}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_checkpoint(model, tmp_path / "other.pt")


def test_remapping_is_pure_and_invertible():
    sd = {"sam_mask_decoder.iou_token.weight": torch.ones(1), "image_encoder.trunk.pos_embed": torch.zeros(1)}
    before = dict(sd)
    mapped = remap_official_keys(sd)
    assert sd == before
    assert set(mapped) == {"mask_decoder.iou_token.weight", "image_encoder.trunk.pos_embed"}
    assert to_official_keys(mapped).keys() == sd.keys()


def test_safetensors_round_trip(tmp_path):
    model = segapp.build_model("test_tiny", device="cpu")
    path = save_safetensors(model, tmp_path / "w.safetensors", metadata={"config": "test_tiny"})
    again = segapp.build_model("test_tiny", path, device="cpu")
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k


def test_config_by_path_and_unknown_names(tmp_path):
    yaml = tmp_path / "mine.yaml"
    yaml.write_text("defaults:\n  - base/sam2.1\n  - _self_\nimage_size: 256\n"
                    "model:\n  image_encoder:\n    trunk: {embed_dim: 8, stages: [1, 1, 1, 1], global_att_blocks: [2],"
                    " window_pos_embed_bkg_spatial_size: [4, 4]}\n"
                    "    neck: {backbone_channel_list: [64, 32, 16, 8]}\n")
    model = segapp.build_model(str(yaml), device="cpu")
    assert model.image_size == 256 and model.prompt_encoder.image_embedding_size == (16, 16)
    with pytest.raises(ValueError, match="unknown config 'nope'"):
        resolve_config("nope")
    with pytest.raises(FileNotFoundError):
        resolve_config(tmp_path / "absent.yaml")
    with pytest.raises(ValueError, match="multiple of 32"):
        segapp.build_model("test_tiny", image_size=100)


def test_hydra_global_state_is_left_as_found():
    from hydra.core.global_hydra import GlobalHydra

    reference.import_reference()  # the reference initialises Hydra at import
    before = GlobalHydra.instance().is_initialized()
    segapp.build_model("test_tiny", device="cpu")
    assert GlobalHydra.instance().is_initialized() == before
    GlobalHydra.instance().clear()
    segapp.build_model("test_tiny", device="cpu")
    assert not GlobalHydra.instance().is_initialized()
    import hydra  # restore the reference's state for later tests
    hydra.initialize_config_module("sam2", version_base="1.2").__enter__()


def test_other_image_sizes_follow_everywhere():
    model = segapp.build_model("test_tiny", device="cpu", image_size=192)
    images = torch.zeros(1, 3, 192, 192)
    emb = model.embed_images(images)
    assert emb.image_embed.shape[-2:] == (12, 12)
    assert [f.shape[-1] for f in emb.high_res_feats] == [48, 24]
    assert model.prompt_encoder.mask_input_size == (48, 48)


def test_parts_contract_is_checked():
    with pytest.raises(ValueError, match="do not match the neck"):
        segapp.build_model("test_tiny", overrides=["model.image_encoder.neck.backbone_channel_list=[1,2,3,4]"])


def test_trunk_position_embedding_is_reused_at_inference_and_follows_the_weights():
    """Hiera.position_embedding keeps its inference result (the bicubic resize of the background
    embedding) while the grid and the parameters stay; training and changed weights recompute."""
    import torch

    model = segapp.build_model("test_tiny", device="cpu")
    trunk = model.image_encoder.trunk
    fresh = trunk.position_embedding(16, 16)  # grad enabled: computed, not kept
    assert fresh.requires_grad and trunk._pos_cache is None
    with torch.inference_mode():
        first = trunk.position_embedding(16, 16)
        assert trunk.position_embedding(16, 16) is first
        torch.testing.assert_close(first, fresh.detach(), rtol=0, atol=0)
        assert trunk.position_embedding(8, 12).shape[1:3] == (8, 12)  # another grid: recomputed
    with torch.no_grad():
        trunk.pos_embed.add_(1.0)  # new weights (an optimiser step, a load_state_dict)
        moved = trunk.position_embedding(16, 16)
    torch.testing.assert_close(moved, first + 1.0)
    trunk.position_embedding(16, 16).sum().backward()  # training still gets gradients
    assert trunk.pos_embed.grad is not None and trunk.pos_embed.grad.abs().sum() > 0


def test_seed_gives_the_same_random_weights_and_leaves_the_global_rng():
    """build_model(seed=...): every process building the same config without a checkpoint gets
    the same weights (segment's resumes and Ray actors rely on it); the global RNG is untouched."""
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = segapp.build_model("test_tiny", device="cpu", seed=7)
    assert torch.equal(torch.rand(3), expected_next)
    torch.manual_seed(456)
    b = segapp.build_model("test_tiny", device="cpu", seed=7)
    c = segapp.build_model("test_tiny", device="cpu", seed=8)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
