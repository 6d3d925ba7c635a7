"""`segapp pretrain`: Hiera as a masked autoencoder. Mask units, no leak from masked pixels, the
loss falling on a tiny run, the checkpoint loading into each config's model (and into `segapp
train --init`), exact resume, the image folders and the CLI's errors. Tiny sizes throughout."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from test_train_data import make_coco

from segapp.build import build_model
from segapp.build_info import model_info
from segapp.bundled import ImageOnlyModelError, require_video
from segapp.cli import main
from segapp.training.image_folders import ImageFolderDataset, NoImagesError, find_images
from segapp.training.mae import MaskedAutoencoder, expand_units, random_unit_mask
from segapp.training.pretrain import PretrainConfig, Pretrainer

SIZE = 128  # test_tiny: a 4 x 4 grid of 32 px mask units


def make_images(folder, count: int = 4, size: tuple[int, int] = (96, 80), suffix: str = ".png"):
    """`count` smooth colour patterns (learnable by a tiny decoder), w x h = `size`."""
    folder.mkdir(parents=True, exist_ok=True)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    paths = []
    for i in range(count):
        img = np.stack([np.sin(xx / (8 + 3 * i)), np.cos(yy / (6 + 2 * i)), np.sin((xx + yy) / (10 + i))], -1)
        path = folder / f"img{i}{suffix}"
        Image.fromarray(((img + 1) * 127.5).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def _model(config: str = "test_tiny", size: int = SIZE, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(config, device="cpu", image_size=size, random_init=True)


def _config(**kw) -> PretrainConfig:
    base = dict(epochs=1, batch_size=2, lr=2e-3, warmup_steps=0, log_every=1, decoder_dim=32, decoder_heads=2)
    base.update(kw)
    return PretrainConfig(**base)


def _read_log(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_masks_whole_units_at_the_asked_ratio():
    gen = torch.Generator().manual_seed(0)
    mask = random_unit_mask(3, (4, 5), 0.6, gen)
    assert mask.shape == (3, 4, 5) and mask.dtype == torch.bool
    assert mask.flatten(1).sum(1).tolist() == [12, 12, 12]  # round(0.6 * 20) in every image
    assert not torch.equal(mask[0], mask[1])  # drawn per image
    tokens = expand_units(mask, 8)  # stage-1 tokens: 8 x 8 per unit
    assert tokens.shape == (3, 32, 40)
    blocks = tokens.reshape(3, 4, 8, 5, 8).permute(0, 1, 3, 2, 4).flatten(3)
    assert torch.equal(blocks.all(-1), blocks.any(-1))  # each unit is masked whole or not at all
    assert torch.equal(blocks[..., 0], mask)
    with pytest.raises(ValueError, match="mask ratio"):
        random_unit_mask(1, (4, 4), 1.0, gen)


def test_mask_unit_is_one_last_stage_token_for_every_trunk():
    for name in ("test_tiny", "segapp_small"):
        mae = MaskedAutoencoder(_model(name, 64).image_encoder.trunk, 64, decoder_dim=32, decoder_heads=2)
        assert (mae.unit_px, mae.unit_tokens, mae.grid) == (32, 8, (2, 2))
    with pytest.raises(ValueError, match="multiple of the 32 px mask unit"):
        MaskedAutoencoder(_model().image_encoder.trunk, 80)


def test_prediction_does_not_see_masked_pixels():
    mae = MaskedAutoencoder(_model().image_encoder.trunk, SIZE, decoder_dim=32, decoder_heads=2).eval()
    images = torch.randn(2, 3, SIZE, SIZE)
    mask = random_unit_mask(2, mae.grid, 0.6, torch.Generator().manual_seed(1))
    changed = torch.where(expand_units(mask, 32)[:, None], torch.randn_like(images), images)
    with torch.no_grad():
        a, b = mae(images, mask), mae(changed, mask)
        c = mae(images, ~mask)  # the masked pixels are visible here: predictions change
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a, c, atol=1e-3)


def make_unit_patterns(folder, count: int = 4):
    """`count` SIZE x SIZE images tiled with one 32 px motif each (colour ramps that differ per
    image): a masked unit can be told from the visible ones."""
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] % 32 / 31.0
    for i in range(count):
        img = np.stack([xx, yy, (xx + yy) / 2][i % 3:] + [xx, yy, (xx + yy) / 2][: i % 3], -1)
        img = img if i < 3 else 1 - img
        Image.fromarray((img * 255).astype(np.uint8)).save(folder / f"motif{i}.png")


def test_loss_falls_overfitting_four_images(tmp_path):
    make_unit_patterns(tmp_path / "imgs", 4)
    data = ImageFolderDataset([tmp_path / "imgs"], image_size=SIZE, augment=False)
    trainer = Pretrainer(_model(), data, _config(batch_size=4, lr=1e-2, epochs=30), tmp_path / "out")
    batch = torch.stack([data[i] for i in range(4)])

    def fixed_loss():
        with torch.no_grad():
            return trainer.compute_loss(batch, step=12345).item()

    before = fixed_loss()
    for _ in range(30):
        trainer.train_step(batch)
    after = fixed_loss()
    # below 1, predicting each unit's mean (the loss of a zero prediction), by far
    assert after < 0.5 < 0.9 < before, (before, after)


@pytest.mark.parametrize("config, size", [("test_tiny", 64), ("segapp_small", 64), ("sam2.1_hiera_t", 64)])
def test_checkpoint_loads_into_the_config_model(tmp_path, config, size):
    make_images(tmp_path / "imgs", 2)
    data = ImageFolderDataset([tmp_path / "imgs"], image_size=size)
    model = _model(config, size)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = Pretrainer(model, data, _config(), tmp_path / "out", config_name=config).fit()
    assert result["steps"] == 1
    loaded = build_model(config, result["weights"], device="cpu", image_size=size)
    state = loaded.state_dict()
    trunk = [k for k in state if k.startswith("image_encoder.trunk.")]
    assert trunk and all(torch.equal(state[k], model.state_dict()[k]) for k in state)
    assert any(not torch.equal(state[k], before[k]) for k in trunk)  # the trunk was trained
    assert all(torch.equal(state[k], before[k]) for k in state if k not in trunk)  # the rest: initial
    assert model_info(loaded).trained_parts == ("image_encoder.trunk",)
    with pytest.raises(ImageOnlyModelError):
        require_video(loaded)


def test_resume_is_exact_mid_epoch(tmp_path):
    make_images(tmp_path / "imgs", 6)
    cfg = _config(epochs=2, save_every=1)  # 3 steps per epoch

    def run(out, model_seed, stop_after=None):
        data = ImageFolderDataset([tmp_path / "imgs"], image_size=64)
        trainer = Pretrainer(_model(size=64, seed=model_seed), data, cfg, out, config_name="test_tiny")
        if stop_after is not None:
            save = trainer.save

            def save_then_stop():
                save()
                if trainer.step == stop_after:
                    raise KeyboardInterrupt

            trainer.save = save_then_stop
        return trainer

    whole = run(tmp_path / "a", 0)
    whole.fit()
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", 0, stop_after=2).fit()
    resumed = run(tmp_path / "b", 7)  # other initial weights: everything must come from last.pt
    resumed.fit(resume=True)
    assert resumed.step == whole.step == 6
    for (k, a), b in zip(whole.mae.state_dict().items(), resumed.mae.state_dict().values()):
        assert torch.equal(a, b), k
    log_a, log_b = _read_log(tmp_path / "a" / "log.csv"), _read_log(tmp_path / "b" / "log.csv")
    assert [r["step"] for r in log_b] == [r["step"] for r in log_a] == ["1", "2", "3", "4", "5", "6"]
    assert [r["loss"] for r in log_b] == [r["loss"] for r in log_a]


def test_image_folders_davis_layout_and_unreadable_files(tmp_path, caplog):
    davis = tmp_path / "davis"
    make_images(davis / "JPEGImages" / "seq1", 3, suffix=".jpg")
    make_images(davis / "Annotations" / "seq1", 3)  # masks: not photos
    photos = tmp_path / "photos"
    make_images(photos / "nested", 2)
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    (photos / "notes.txt").write_text("ignored")
    assert len(find_images([davis])) == 3  # --images on a DAVIS folder: JPEGImages only
    assert len(find_images([], [davis])) == 3
    data = ImageFolderDataset([photos], [davis], image_size=64)
    assert len(data) == 5 and data.skipped == [str(photos / "broken.jpg")]
    assert "skipped 1 unreadable image files" in caplog.text
    sample = data[0]
    assert sample.shape == (3, 64, 64) and sample.dtype == torch.float32
    data.set_epoch(1)
    again = data[0]
    assert torch.equal(again, data[0]) and not torch.equal(again, sample)  # per (seed, epoch, index)


def test_pretrained_checkpoint_initialises_segapp_train(tmp_path, capsys):
    make_images(tmp_path / "imgs", 2)
    out = tmp_path / "mae"
    argv = ["pretrain", "--images", str(tmp_path / "imgs"), "--config", "test_tiny", "--image-size", "64",
            "--epochs", "2", "--batch-size", "2", "--decoder-dim", "32", "--decoder-heads", "2",
            "--workers", "0", "--device", "cpu", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"weights: {out / 'pretrained.safetensors'}" in printed and "segapp train --init" in printed
    assert {p.name for p in out.iterdir()} == {"pretrained.safetensors", "last.pt", "log.csv"}
    assert [r["step"] for r in _read_log(out / "log.csv")] == ["1", "2"]
    with safe_open(str(out / "pretrained.safetensors"), "pt") as f:
        meta = f.metadata()
    assert meta["trained_parts"] == "image_encoder.trunk" and meta["image_size"] == "64"
    recipe = json.loads(meta["recipe"])
    assert recipe["mask_ratio"] == 0.6 and recipe["images"] == [str(tmp_path / "imgs")]
    # a second run into the same folder needs --resume
    assert main(argv) == 2 and "--resume" in capsys.readouterr().err
    assert main(argv + ["--resume"]) == 0  # nothing left to do: the run is complete
    ann, images = make_coco(tmp_path / "coco")
    train = ["train", "--annotations", str(ann), "--images", str(images), "--config", "test_tiny",
             "--image-size", "64", "--epochs", "1", "--batch-size", "2", "--correction-rounds", "1",
             "--device", "cpu", "--init", str(out / "pretrained.safetensors"), "--out", str(tmp_path / "ft")]
    assert main(train) == 0
    assert (tmp_path / "ft" / "final.safetensors").is_file()


@pytest.mark.parametrize("setup, extra, message", [
    (None, [], "give at least one folder"),
    ("empty", [], "no images (.jpg, .jpeg, .png) in --images folder"),
    ("missing", [], "--images folder not found"),
    ("broken", [], "none of the 2 image files could be read"),
    ("video", [], "video files such as clip.mp4 are not read"),
    ("ok", ["--config", "hiera_nope"], "unknown config 'hiera_nope'"),
    ("ok", ["--mask-ratio", "1.5"], "mask ratio must be in (0, 1)"),
    ("ok", ["--image-size", "100"], "multiple of 32"),
])
def test_cli_bad_input_exits_2(tmp_path, capsys, setup, extra, message):
    folder = tmp_path / "in"
    if setup == "empty":
        folder.mkdir()
    elif setup == "broken":
        folder.mkdir()
        (folder / "a.jpg").write_bytes(b"\xff\xd8 truncated")
        (folder / "b.png").write_bytes(b"")
    elif setup == "video":
        folder.mkdir()
        (folder / "clip.mp4").write_bytes(b"\x00")
    elif setup == "ok":
        make_images(folder, 1)
    argv = ["pretrain", "--config", "test_tiny", "--out", str(tmp_path / "run"), "--workers", "0"]
    if setup is not None:
        argv += ["--images" if setup != "video" else "--videos", str(folder)]
    assert main(argv + extra) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "run" / "last.pt").exists()


def test_resume_with_other_settings_exits_2(tmp_path, capsys):
    make_images(tmp_path / "imgs", 2)
    argv = ["pretrain", "--images", str(tmp_path / "imgs"), "--config", "test_tiny", "--image-size", "64",
            "--decoder-dim", "32", "--decoder-heads", "2", "--workers", "0", "--device", "cpu",
            "--out", str(tmp_path / "run"), "--epochs", "1"]
    assert main(argv) == 0
    assert main(argv + ["--resume", "--mask-ratio", "0.5"]) == 2
    assert "--mask-ratio 0.6, this run has 0.5" in capsys.readouterr().err


def test_a_file_that_fails_to_decode_later_is_replaced_by_the_next(tmp_path, caplog):
    paths = make_images(tmp_path / "imgs", 2)
    data = ImageFolderDataset([tmp_path / "imgs"], image_size=64, augment=False)
    expected = data[1]
    paths[0].write_bytes(b"corrupted after the check")
    assert torch.equal(data[0], expected)
    assert f"cannot decode {paths[0]}" in caplog.text
