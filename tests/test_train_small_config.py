"""The bundled small model config (trained from scratch by `segapp train`) and bf16 training."""
from __future__ import annotations

import pytest
import torch

from segapp.build import build_model, compose_config
from segapp.checkpoint import save_safetensors

MAX_WEIGHTS_BYTES = 25 * 10**6


def test_segapp_small_builds_and_fits_the_size_budget(tmp_path):
    model = build_model("segapp_small", device="cpu", random_init=True)
    assert model.image_size == 384 and model.hidden_dim == 64 and model.mem_dim == 32
    path = save_safetensors(model, tmp_path / "small.safetensors")
    assert path.stat().st_size <= MAX_WEIGHTS_BYTES
    assert sum(p.numel() for p in model.parameters()) < 3_000_000
    emb = model.embed_images(torch.zeros(1, 3, 384, 384))
    assert emb.image_embed.shape == (1, 64, 24, 24)
    out = model.decode(emb, (torch.tensor([[[100.0, 120.0]]]), torch.tensor([[1]])), None, True)
    assert out.masks.shape == (1, 3, 96, 96)


@pytest.mark.parametrize("size", [256, 512])
def test_segapp_small_at_other_input_sizes(size):
    cfg = compose_config("segapp_small", [f"image_size={size}"])
    assert cfg.model.prompt_encoder.image_size == size
    model = build_model("segapp_small", device="cpu", image_size=size, random_init=True)
    assert model.embed_images(torch.zeros(1, 3, size, size)).image_embed.shape[-1] == size // 16


def test_bf16_autocast_loss_agrees_with_fp32(tmp_path):
    from test_train_data import make_coco

    from segapp.training import AugmentConfig, CocoInstanceDataset, TrainConfig, Trainer
    from segapp.training.data import collate

    ann, images = make_coco(tmp_path)
    torch.manual_seed(0)
    model = build_model("test_tiny", device="cpu", image_size=64)
    data = CocoInstanceDataset(ann, images, 64, augment=AugmentConfig.none())
    batch = collate([data[0], data[1]])
    losses = {}
    for amp in ("off", "bf16"):
        trainer = Trainer(model, data, TrainConfig(amp=amp, correction_rounds=1), tmp_path / amp)
        with torch.no_grad():
            losses[amp] = trainer.compute_loss(batch, trainer.generator(0))[0].item()
    assert losses["bf16"] == pytest.approx(losses["off"], rel=0.05)
