"""The training loop and `segapp train`: overfitting a fixed batch, outputs, resume, freezing,
CLI errors. Tiny model (test_tiny at 64 px) on hand-made COCO files; a few steps each."""
from __future__ import annotations

import csv
import json

import pytest
import torch
from safetensors import safe_open
from test_train_data import make_coco

from segapp.build import build_model
from segapp.checkpoint import load_checkpoint
from segapp.cli import main
from segapp.evaluation import load_coco_instances
from segapp.training import AugmentConfig, CocoInstanceDataset, TrainConfig, Trainer
from segapp.training.data import collate

SIZE = 64


def _model(seed: int = 0):
    torch.manual_seed(seed)
    return build_model("test_tiny", device="cpu", image_size=SIZE)


def _config(**kw) -> TrainConfig:
    base = dict(epochs=1, batch_size=2, instances_per_image=2, lr=2e-3, warmup_steps=0, correction_rounds=1,
                augment=AugmentConfig.none(), log_every=1)
    base.update(kw)
    return TrainConfig(**base)


def _read_log(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("resolution", ["mask", "input"])
def test_training_overfits_a_fixed_batch(tmp_path, resolution):
    """With the loss on the low-res logits (default) and at the input size (SAM 2's) alike."""
    ann, images = make_coco(tmp_path)
    data = CocoInstanceDataset(ann, images, SIZE, augment=AugmentConfig.none())
    trainer = Trainer(_model(), data, _config(lr=3e-3, grad_clip=1.0, epochs=20, loss_resolution=resolution),
                      tmp_path / "out")
    batch = collate([data[0], data[1]])

    def fixed_loss():
        with torch.no_grad():
            return trainer.compute_loss(batch, trainer.generator(12345))[0].item()

    before = fixed_loss()
    for _ in range(20):
        trainer.train_step(batch)
    after = fixed_loss()
    assert after < 0.6 * before, (before, after)


def test_fit_writes_log_and_checkpoints_and_validates(tmp_path):
    ann, images = make_coco(tmp_path)
    data = CocoInstanceDataset(ann, images, SIZE)
    val = load_coco_instances(ann, images)
    out = tmp_path / "out"
    result = Trainer(_model(), data, _config(epochs=2), out, val_data=val, config_name="test_tiny").fit()
    assert result["epochs"] == 2 and result["steps"] == 2
    rows = _read_log(out / "log.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert all(0.0 <= float(r["val_miou"]) <= 1.0 and float(r["loss"]) > 0 for r in rows)
    for name in ("last.pt", "best.safetensors", "final.safetensors"):
        assert (out / name).is_file()
    with safe_open(str(out / "final.safetensors"), "pt") as f:
        meta = f.metadata()
    assert meta["config"] == "test_tiny" and meta["image_size"] == str(SIZE)
    assert "image_encoder" in meta["config_yaml"]
    assert json.loads(meta["recipe"])["epochs"] == 2
    # the weights load into a freshly built model
    fresh = build_model("test_tiny", out / "final.safetensors", device="cpu", image_size=SIZE)
    trained = load_checkpoint(_model(1), out / "final.safetensors")
    for (k, a), b in zip(fresh.state_dict().items(), trained.state_dict().values()):
        assert torch.equal(a, b), k


def test_resume_continues_with_the_same_state(tmp_path):
    """Interrupted after epoch 1 and resumed: the same weights as a straight run, with
    augmentation and data-loading workers (they keep no random state: every sample comes from
    (seed, epoch, index)), and the uninterrupted run without workers agrees too."""
    ann, images = make_coco(tmp_path)

    def trainer(out, epochs, workers=2):
        data = CocoInstanceDataset(ann, images, SIZE, seed=3)
        return Trainer(_model(), data, _config(epochs=epochs, batch_size=1, seed=3, workers=workers,
                                               augment=AugmentConfig()), out)

    straight = trainer(tmp_path / "a", 2, workers=0)
    straight.fit()
    first = trainer(tmp_path / "b", 2)
    first.config.epochs = 1  # stop after one epoch, with the schedule of a two-epoch run
    first.fit()
    saved = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert saved["epoch"] == 1 and saved["step"] == 2

    resumed = trainer(tmp_path / "b", 2)
    resumed.load_state(tmp_path / "b" / "last.pt")
    opt = resumed.optimizer.state_dict()
    for key, state in saved["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(opt["state"][key][name], value), (key, name)
    assert resumed.scheduler.get_last_lr() == first.scheduler.get_last_lr()

    resumed = trainer(tmp_path / "b", 2)
    result = resumed.fit(resume=True)
    assert result["epochs"] == 2 and result["steps"] == 4
    assert [r["epoch"] for r in _read_log(tmp_path / "b" / "log.csv")] == ["1", "2"]
    for (k, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=k)


def test_freeze_image_encoder_and_memory_parts_stay_unchanged(tmp_path):
    ann, images = make_coco(tmp_path)
    data = CocoInstanceDataset(ann, images, SIZE, augment=AugmentConfig.none())
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = Trainer(model, data, _config(freeze=("image_encoder",)), tmp_path / "out")
    trainer.train_step(collate([data[0], data[1]]))
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert not any(k.startswith("image_encoder.") for k in changed)
    assert not any(k.startswith(("memory_attention.", "memory_encoder.", "obj_ptr", "maskmem")) for k in changed)
    assert any(k.startswith("mask_decoder.") for k in changed)
    assert any(k.startswith("prompt_encoder.") for k in changed)


def test_cli_trains_resumes_and_refuses_to_overwrite(tmp_path, capsys):
    ann, images = make_coco(tmp_path)
    out = tmp_path / "run"
    args = ["train", "--annotations", str(ann), "--images", str(images), "--config", "test_tiny",
            "--image-size", str(SIZE), "--epochs", "1", "--batch-size", "2", "--correction-rounds", "1",
            "--val-annotations", str(ann), "--val-images", str(images), "--device", "cpu",
            "--freeze", "image_encoder", "--augment", "light", "--out", str(out)]
    assert main(args) == 0
    assert "best validation mIoU" in capsys.readouterr().out
    with safe_open(str(out / "final.safetensors"), "pt") as f:
        recipe = json.loads(f.metadata()["recipe"])
    assert recipe["freeze"] == ["image_encoder"] and recipe["augment"]["copy_paste_prob"] == 0.0
    assert recipe["train_annotations"] == [str(ann)]
    assert main(args) == 2  # a run is there: --resume or another --out
    assert "--resume" in capsys.readouterr().err
    args[args.index("--epochs") + 1] = "2"
    assert main(args + ["--resume"]) == 0
    assert [r["epoch"] for r in _read_log(out / "log.csv")] == ["1", "2"]
    # a resumed run must keep the frozen parts
    args[args.index("--epochs") + 1] = "3"
    args.remove("--freeze"), args.remove("image_encoder")
    assert main(args + ["--resume"]) == 2
    assert "freeze" in capsys.readouterr().err


@pytest.mark.parametrize("change, message", [
    ({"--annotations": "missing.json"}, "annotation file not found"),
    ({"--images": "nowhere"}, "images folder not found"),
    ({"--val-annotations": "@ann"}, "together"),
    ({"--image-size": "100"}, "multiple of 32"),
    ({"--init": "missing.pt"}, "checkpoint not found"),
    ({"--freeze": "trunk"}, "cannot freeze"),
    ({"--epochs": "0"}, "epochs"),
    ({"--resume": None}, "does not exist"),
    ({"--config": "no_such_config"}, "unknown config"),
])
def test_cli_usage_errors_exit_2(tmp_path, capsys, change, message):
    ann, images = make_coco(tmp_path)
    opts = {"--annotations": str(ann), "--images": str(images), "--config": "test_tiny",
            "--image-size": str(SIZE), "--out": str(tmp_path / "run"), "--device": "cpu"}
    for key, value in change.items():
        opts[key] = str(ann) if value == "@ann" else (str(tmp_path / value) if value and value.endswith(
            (".json", ".pt")) or value == "nowhere" else value)
    argv = ["train"]
    for key, value in opts.items():
        argv += [key] if value is None else [key, value]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_cli_init_checkpoint_of_another_config_exits_2(tmp_path, capsys):
    from segapp.checkpoint import save_safetensors

    ann, images = make_coco(tmp_path)
    ckpt = save_safetensors(_model(), tmp_path / "tiny.safetensors")
    argv = ["train", "--annotations", str(ann), "--images", str(images), "--config", "segapp_small",
            "--init", str(ckpt), "--out", str(tmp_path / "run"), "--device", "cpu"]
    assert main(argv) == 2
    assert "--config of this checkpoint" in capsys.readouterr().err


def test_cli_needs_one_images_folder_per_annotation_file(tmp_path, capsys):
    ann, images = make_coco(tmp_path)
    argv = ["train", "--annotations", str(ann), "--annotations", str(ann), "--images", str(images),
            "--config", "test_tiny", "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    assert "2 --annotations for 1 --images" in capsys.readouterr().err


def test_cli_fine_tunes_an_official_format_checkpoint_with_the_encoder_frozen(tmp_path):
    """--init with an official-layout .pt ({"model": state_dict}, official key names)."""
    from segapp.checkpoint import read_state_dict, to_official_keys

    ann, images = make_coco(tmp_path)
    init = _model(7)
    official = tmp_path / "official.pt"
    torch.save({"model": to_official_keys(init.state_dict())}, official)
    out = tmp_path / "ft"
    argv = ["train", "--annotations", str(ann), "--images", str(images), "--config", "test_tiny",
            "--image-size", str(SIZE), "--init", str(official), "--freeze", "image_encoder",
            "--epochs", "1", "--batch-size", "2", "--correction-rounds", "1", "--lr", "1e-2",
            "--device", "cpu", "--out", str(out)]
    assert main(argv) == 0
    before, after = init.state_dict(), read_state_dict(out / "final.safetensors")
    encoder = [k for k in before if k.startswith("image_encoder.")]
    assert encoder and all(torch.equal(before[k], after[k]) for k in encoder)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("mask_decoder."))


def test_cli_object_augmentation(tmp_path, capsys):
    """--augment object trains (object-centred crops, for box zoom) and is recorded in the
    weights' recipe; an unknown preset is a usage error naming the choices."""
    ann, images = make_coco(tmp_path)
    out = tmp_path / "obj"
    argv = ["train", "--annotations", str(ann), "--images", str(images), "--config", "test_tiny",
            "--image-size", str(SIZE), "--epochs", "1", "--batch-size", "2", "--correction-rounds", "1",
            "--device", "cpu", "--augment", "object", "--out", str(out)]
    assert main(argv) == 0
    with safe_open(str(out / "final.safetensors"), "pt") as f:
        recipe = json.loads(f.metadata()["recipe"])
    assert recipe["augment"]["object_crop_prob"] == 0.75
    argv[argv.index("object")] = "object+copy-paste"
    assert main(argv[:-2] + ["--out", str(tmp_path / "paste")]) == 0
    with safe_open(str(tmp_path / "paste" / "final.safetensors"), "pt") as f:
        recipe = json.loads(f.metadata()["recipe"])
    assert recipe["augment"]["object_crop_prob"] == 0.75 and recipe["augment"]["copy_paste_prob"] == 0.5
    argv[argv.index("object+copy-paste")] = "zoom"
    with pytest.raises(SystemExit) as exit_info:
        main(argv[:-2] + ["--out", str(tmp_path / "other")])
    assert exit_info.value.code == 2
    assert "'object'" in capsys.readouterr().err


def test_cli_from_scratch_follows_the_seed(tmp_path):
    """Two identical runs from random weights give identical weights; another --seed other ones."""
    from segapp.checkpoint import read_state_dict

    ann, images = make_coco(tmp_path)

    def run(name, seed):
        out = tmp_path / name
        argv = ["train", "--annotations", str(ann), "--images", str(images), "--config", "test_tiny",
                "--image-size", str(SIZE), "--epochs", "1", "--batch-size", "2", "--correction-rounds", "1",
                "--device", "cpu", "--seed", str(seed), "--out", str(out)]
        assert main(argv) == 0
        return read_state_dict(out / "final.safetensors")

    a, b, c = run("a", 5), run("b", 5), run("c", 6)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert sum(not torch.equal(a[k], c[k]) for k in a) > len(a) // 2


def test_cli_resume_refuses_a_changed_recipe_unless_allowed(tmp_path, capsys):
    """--resume with another dataset, learning rate, batch size or augmentation exits 2 and lists
    every change; --allow-changed-recipe continues; --epochs may change freely."""
    ann, images = make_coco(tmp_path)
    other_ann, other_images = make_coco(tmp_path / "other")
    out = tmp_path / "run"
    base = {"--annotations": str(ann), "--images": str(images), "--config": "test_tiny",
            "--image-size": str(SIZE), "--epochs": "1", "--batch-size": "2", "--correction-rounds": "1",
            "--device": "cpu", "--augment": "light", "--lr": "1e-3", "--out": str(out)}

    def argv(**change):
        opts = {**base, **{"--" + k.replace("_", "-"): v for k, v in change.items()}}
        return ["train"] + [x for kv in opts.items() for x in kv]

    assert main(argv()) == 0
    capsys.readouterr()
    changed = argv(epochs="2", annotations=str(other_ann), images=str(other_images), lr="2e-3",
                   batch_size="1", augment="strong")
    assert main(changed + ["--resume"]) == 2
    err = capsys.readouterr().err
    for fact in ("lr: 0.001 -> 0.002", "batch_size: 2 -> 1", "augment.copy_paste_prob: 0.0 -> 0.3",
                 f"train_annotations: ['{ann}'] -> ['{other_ann}']", "--allow-changed-recipe"):
        assert fact in err, (fact, err)
    assert "epochs" not in err.split("changed:")[1]
    assert main(changed + ["--resume", "--allow-changed-recipe"]) == 0
    assert [r["epoch"] for r in _read_log(out / "log.csv")] == ["1", "2"]
