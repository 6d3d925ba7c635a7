"""Video-clip training of the memory (`segapp train-video`): clips whose masks follow their
frames, bad folders named, a tiny overfit run that trains the memory (and leaves frozen parts
alone), weights that VideoPredictor accepts and that track, exact resume, and the CLI.
Tiny model (test_tiny at 64 px) on generated DAVIS-layout folders of 3-4 frames."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from test_train_data import RED, make_coco

from segapp import bundled
from segapp.build import build_model
from segapp.build_info import model_info, set_model_info
from segapp.checkpoint import save_safetensors
from segapp.cli import main
from segapp.training.clip_augment import ClipAugment, affine_matrix, warp
from segapp.training.video_data import CocoPseudoClips, VideoDataError, VideoFolderClips
from segapp.training.video_trainer import MEMORY_PARTS, VideoTrainConfig, VideoTrainer
from segapp.transforms import PIXEL_MEAN, PIXEL_STD
from segapp.video.predictor import VideoPredictor

SIZE = 64
FRAME_W, FRAME_H = 96, 64
IMAGE_ONLY = "image_encoder,prompt_encoder,mask_decoder,no_mem_embed"


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny tensors: threads only contend with each other (and with other test processes).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_videos(root, names=("seq_a", "seq_b"), frames=4, palette=False):
    """Sequences of a red square moving right over a dark noisy background (0/255 masks, or
    palette masks with the square as object 2 and a static blue bar as object 1)."""
    rng = np.random.default_rng(0)
    for n, name in enumerate(names):
        (root / "JPEGImages" / name).mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / name).mkdir(parents=True, exist_ok=True)
        background = (rng.random((FRAME_H, FRAME_W, 3)) * 60).astype(np.uint8)
        for t in range(frames):
            img, ids = background.copy(), np.zeros((FRAME_H, FRAME_W), np.uint8)
            x, y = 8 + 10 * t, 16 + 4 * n
            img[y:y + 28, x:x + 28] = RED
            ids[y:y + 28, x:x + 28] = 2 if palette else 255
            if palette:
                img[50:60, 4:90] = (40, 60, 230)
                ids[50:60, 4:90] = 1
            Image.fromarray(img).save(root / "JPEGImages" / name / f"{t:05d}.jpg", quality=95)
            mask = Image.fromarray(ids, mode="P" if palette else "L")
            if palette:
                mask.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (256 * 3 - 9))
            mask.save(root / "Annotations" / name / f"{t:05d}.png")
    return root


def _rgb(frames: torch.Tensor) -> torch.Tensor:
    """Normalised [T, 3, S, S] -> [T, S, S, 3] in [0, 255]."""
    mean, std = torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1), torch.tensor(PIXEL_STD).view(1, 3, 1, 1)
    return ((frames * std + mean) * 255).permute(0, 2, 3, 1)


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum()) / max(float((a | b).sum()), 1.0)


def _red(frames: torch.Tensor) -> torch.Tensor:
    rgb = _rgb(frames)
    return (rgb[..., 0] > 150) & (rgb[..., 1] < 110) & (rgb[..., 2] < 110)


def _model(seed: int = 0):
    torch.manual_seed(seed)
    return build_model("test_tiny", device="cpu", image_size=SIZE)


def _config(**kw) -> VideoTrainConfig:
    base = dict(epochs=1, clip_frames=3, lr=5e-3, warmup_steps=0, grad_clip=1.0, correction_rounds=1,
                augment=ClipAugment.none(), log_every=1, val_frames=4)
    base.update(kw)
    return VideoTrainConfig(**base)


# ------------------------------------------------------------------------------------ data
def test_warp_moves_image_and_mask_together():
    image = torch.zeros(1, 3, 32, 32)
    image[:, 0, 8:16, 8:16] = 1.0
    mask = image[:, :1] > 0.5
    shifted, shifted_mask = warp(image, mask, affine_matrix(tx=0.5)[None])  # a quarter of the side
    assert torch.equal(shifted_mask[0, 0], shifted[0, 0] > 0.5)
    assert shifted_mask[0, 0, 8:16, 16:24].all() and not shifted_mask[0, 0, :, :16].any()
    same, same_mask = warp(image, mask, np.eye(3)[None])
    assert torch.allclose(same, image, atol=1e-5) and torch.equal(same_mask, mask)


def test_video_clips_masks_follow_their_augmented_frames(tmp_path):
    root = make_videos(tmp_path / "videos")
    data = VideoFolderClips(root, SIZE, clip_frames=4, augment=ClipAugment(colour_prob=0.0), seed=3)
    for index in range(len(data)):
        clip = data[index]
        assert clip.frames.shape == (4, 3, SIZE, SIZE) and clip.masks.shape == (4, 1, SIZE, SIZE)
        red = _red(clip.frames)
        for t in range(4):
            assert _iou(clip.masks[t, 0], red[t]) > 0.85, (index, t)
        assert not torch.equal(clip.masks[0], clip.masks[-1])  # the square moves
    assert data.clip(0, epoch=5).name == data.clip(0, epoch=5).name  # same draw, same clip
    assert torch.equal(data.clip(1, epoch=5).frames, data.clip(1, epoch=5).frames)


def test_palette_masks_give_one_object_each(tmp_path):
    root = make_videos(tmp_path / "videos", names=("multi",), palette=True)
    clip = VideoFolderClips(root, SIZE, clip_frames=3, val=True)[0]
    assert clip.masks.shape == (3, 2, SIZE, SIZE)
    assert not (clip.masks[:, 0] & clip.masks[:, 1]).any()
    assert _iou(clip.masks[0, 1], _red(clip.frames)[0]) > 0.85  # object 2 is the red square


def test_coco_pseudo_clips_drift_with_their_masks(tmp_path):
    ann, images = make_coco(tmp_path)
    data = CocoPseudoClips(ann, images, SIZE, clip_frames=6, seed=1,
                           augment=ClipAugment(colour_prob=0.0, step_translation=0.06))
    clip = data[0]  # the red square
    assert clip.frames.shape == (6, 3, SIZE, SIZE) and clip.masks.shape[:2] == (6, 1)
    red = _red(clip.frames)
    for t in range(6):
        if clip.masks[t, 0].sum() > 20:
            assert _iou(clip.masks[t, 0], red[t]) > 0.8, t
    centres = [torch.nonzero(m[0]).float().mean(0) for m in clip.masks if m[0].sum() > 20]
    assert float((centres[-1] - centres[0]).norm()) > 2  # it moved


def test_bad_video_folders_are_named(tmp_path):
    with pytest.raises(VideoDataError, match="not found"):
        VideoFolderClips(tmp_path / "nowhere", SIZE)
    empty = tmp_path / "empty"
    (empty / "JPEGImages").mkdir(parents=True)
    (empty / "Annotations").mkdir()
    with pytest.raises(VideoDataError, match="no sequence folder"):
        VideoFolderClips(empty, SIZE)
    with pytest.raises(VideoDataError, match="DAVIS layout"):
        VideoFolderClips(tmp_path, SIZE)

    root = make_videos(tmp_path / "unannotated", names=("cat",))
    for p in (root / "Annotations" / "cat").iterdir():
        p.unlink()
    (root / "Annotations" / "cat").rmdir()
    with pytest.raises(VideoDataError, match="sequence cat has no annotations"):
        VideoFolderClips(root, SIZE)

    root = make_videos(tmp_path / "fewer", names=("dog",))
    (root / "Annotations" / "dog" / "00002.png").unlink()
    with pytest.raises(VideoDataError, match=r"dog: 3 masks for 4 frames \(frame 00002.jpg has no mask"):
        VideoFolderClips(root, SIZE)

    root = make_videos(tmp_path / "sizes", names=("owl",))
    Image.new("L", (50, 40)).save(root / "Annotations" / "owl" / "00001.png")
    with pytest.raises(VideoDataError, match=r"owl: mask .*00001.png is 50x40, its frame .*00001.jpg is 96x64"):
        VideoFolderClips(root, SIZE)

    root = make_videos(tmp_path / "rgb", names=("fox",))
    Image.new("RGB", (FRAME_W, FRAME_H)).save(root / "Annotations" / "fox" / "00000.png")
    with pytest.raises(VideoDataError, match="00000.png is a RGB image"):
        VideoFolderClips(root, SIZE, val=True)[0]


def test_unreadable_frames_are_skipped_and_counted(tmp_path, caplog):
    root = make_videos(tmp_path / "videos", names=("seq_a",), frames=4)
    (root / "JPEGImages" / "seq_a" / "00001.jpg").write_bytes(b"not a jpeg")
    data = VideoFolderClips(root, SIZE, clip_frames=4, val=True)
    assert data.skip_counts["unreadable_frame"] == 1
    assert "00001.jpg" in caplog.text
    clip = data[0]
    assert clip.frames.shape[0] == 3  # the three readable frames


# ------------------------------------------------------------------------------------ training
def _frozen_and_memory(model):
    return ({k: v.clone() for k, v in model.state_dict().items() if k.startswith("image_encoder.")},
            {k: v.clone() for k, v in model.state_dict().items() if k.split(".")[0] in MEMORY_PARTS})


def test_overfit_clip_trains_the_memory_and_leaves_frozen_parts(tmp_path):
    root = make_videos(tmp_path / "videos", names=("seq_a",))
    data = VideoFolderClips(root, SIZE, clip_frames=3, augment=ClipAugment.none())
    model = _model()
    trainer = VideoTrainer(model, data, _config(lr=1e-2, freeze=("image_encoder",)), tmp_path / "out")
    clip = data[0]
    frozen, memory = _frozen_and_memory(model)

    def fixed_loss():
        with torch.no_grad():
            return trainer.run_clip(clip, trainer.generator(99), prompt="point", correct_frame=2).loss.item()

    before = fixed_loss()
    for _ in range(20):
        trainer.train_step(clip)
    after = fixed_loss()
    assert after < 0.7 * before, (before, after)
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in frozen.items())
    changed = {k.split(".")[0] for k, v in memory.items() if not torch.equal(state[k], v)}
    assert {"memory_attention", "memory_encoder", "obj_ptr_proj", "maskmem_tpos_enc"} <= changed


def _tracked_iou(model, root, name="seq_a", frames=4) -> float:
    """Mean IoU of VideoPredictor's masks (first-frame mask as the prompt) on frames 1.."""
    predictor = VideoPredictor(model)
    state = predictor.init_state(str(root / "JPEGImages" / name))
    first = np.asarray(Image.open(root / "Annotations" / name / "00000.png")) > 0
    predictor.add_new_mask(state, 0, 1, first)
    ious = []
    for t, _, logits in predictor.propagate_in_video(state):
        if t:
            target = torch.from_numpy(np.asarray(Image.open(root / "Annotations" / name / f"{t:05d}.png")) > 0)
            ious.append(_iou(logits[0, 0] > 0, target))
    assert len(ious) == frames - 1
    return float(np.mean(ious))


def test_trained_memory_is_accepted_by_video_predictor_and_tracks(tmp_path):
    root = make_videos(tmp_path / "videos", names=("seq_a",), frames=4)
    # An image-only checkpoint (its metadata says the memory was never trained) is refused ...
    image_only = save_safetensors(_model(), tmp_path / "image_only.safetensors",
                                  {bundled.TRAINED_PARTS_KEY: IMAGE_ONLY})
    untrained = build_model("test_tiny", image_only, device="cpu", image_size=SIZE)
    with pytest.raises(bundled.ImageOnlyModelError):
        VideoPredictor(untrained)
    set_model_info(untrained, trained_parts=None)  # (to measure how it tracks before training)
    before = _tracked_iou(untrained, root)

    # ... video training lifts the refusal, and the memory now tracks the square.
    model = build_model("test_tiny", image_only, device="cpu", image_size=SIZE)
    data = VideoFolderClips(root, SIZE, clip_frames=4, augment=ClipAugment.none())
    config = _config(epochs=12, clip_frames=4, lr=1e-2, prob_mask=1.0, freeze=("image_encoder",))
    result = VideoTrainer(model, data, config, tmp_path / "out", config_name="test_tiny",
                          prior_parts=model_info(model).trained_parts).fit()
    with safe_open(str(result["final"]), "pt") as f:
        meta = f.metadata()
    parts = meta[bundled.TRAINED_PARTS_KEY].split(",")
    assert set(IMAGE_ONLY.split(",")) | set(MEMORY_PARTS) == set(parts)
    trained = build_model("test_tiny", result["final"], device="cpu", image_size=SIZE)
    assert "memory_attention" in model_info(trained).trained_parts
    after = _tracked_iou(trained, root)
    assert after > before + 0.3 and after > 0.5, (before, after)


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    root = make_videos(tmp_path / "videos", names=("seq_a", "seq_b"), frames=4)

    def trainer(out, epochs: int) -> VideoTrainer:
        data = VideoFolderClips(root, SIZE, clip_frames=3, augment=ClipAugment(), seed=4)
        return VideoTrainer(_model(), data, _config(epochs=epochs, correction_rounds=2, prob_correct_frame=1.0),
                            out, config_name="test_tiny")

    whole = trainer(tmp_path / "whole", 2)
    whole.fit()
    first = trainer(tmp_path / "parts", 2)
    first.config.epochs = 1  # stopped after the first epoch (the schedule is that of 2)
    first.fit()
    resumed = trainer(tmp_path / "parts", 2)
    resumed.fit(resume=True)
    assert resumed.step == whole.step == 4
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    with open(tmp_path / "parts" / "log.csv", newline="") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1", "2"]


# ------------------------------------------------------------------------------------ CLI
def test_cli_trains_on_videos_and_coco_with_held_out_validation(tmp_path, capsys):
    root = make_videos(tmp_path / "videos", names=("seq_a", "seq_b", "seq_c"), frames=3)
    ann, images = make_coco(tmp_path)
    out = tmp_path / "run"
    code = main(["train-video", "--videos", str(root), "--hold-out", "1", "--annotations", str(ann),
                 "--images", str(images), "--config", "test_tiny", "--image-size", str(SIZE), "--device", "cpu",
                 "--clip-frames", "3", "--val-frames", "3", "--epochs", "1", "--freeze", "image_encoder",
                 "--seed", "5", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "trained 1 epochs (4 clips)" in printed and "best validation J" in printed
    with open(out / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and 0.0 <= float(rows[0]["val_j"]) <= 1.0 and rows[0]["clips"] == "4"
    with safe_open(str(out / "final.safetensors"), "pt") as f:
        meta = f.metadata()
    recipe = json.loads(meta["recipe"])
    assert recipe["held_out"] == ["seq_c"] and recipe["freeze"] == ["image_encoder"] and recipe["seed"] == 5
    # test_tiny without --init starts from random weights: only this run's parts are trained
    assert "image_encoder" not in meta[bundled.TRAINED_PARTS_KEY].split(",")
    assert "memory_attention" in meta[bundled.TRAINED_PARTS_KEY].split(",")
    # a second run into the same folder needs --resume
    assert main(["train-video", "--videos", str(root), "--config", "test_tiny", "--out", str(out)]) == 2
    assert "holds a run already" in capsys.readouterr().err


def test_cli_errors_name_the_problem(tmp_path, capsys):
    assert main(["train-video", "--config", "test_tiny", "--out", str(tmp_path / "o")]) == 2
    assert "no training data" in capsys.readouterr().err
    root = make_videos(tmp_path / "videos", names=("only",), frames=3)
    (root / "Annotations" / "only" / "00001.png").unlink()
    assert main(["train-video", "--videos", str(root), "--config", "test_tiny", "--image-size", str(SIZE),
                 "--device", "cpu", "--out", str(tmp_path / "o")]) == 2
    assert "only: 2 masks for 3 frames" in capsys.readouterr().err
    assert main(["train-video", "--videos", str(tmp_path / "missing"), "--config", "test_tiny",
                 "--out", str(tmp_path / "o")]) == 2
    assert "video folder not found" in capsys.readouterr().err
