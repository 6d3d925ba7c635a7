"""Training fast paths against their plain twins: the same outputs and the same gradients.

- PromptEncoder(matmul_convs) and MaskDecoder(matmul_convs): in training mode the small 2x2
  convolutions run as matrix products on channels-last maps; the plain path (False, or eval
  mode) runs the convolution modules. Checked on segapp_small's layout (box drawn as a dense
  prompt, click maps, high-resolution features) with random weights.
- A whole training loss (`Trainer.compute_loss`: encoder, every prompt round, losses) and its
  gradients, fast against plain.
- Trainer.round_threads: the prompt rounds of a step split over threads (training.rounds)
  against one thread: loss, statistics and every gradient; and a short run with threads gives
  the same weights twice.
"""
from __future__ import annotations

import copy

import pytest
import torch
from test_train_data import make_coco

import reference
from segapp.build import build_model
from segapp.modeling.layers import (LayerNorm2d, conv1x1_nhwc, conv2x2_planes, conv2x2_to_nhwc,
                                    conv_transpose2x2_nhwc, layer_norm_planes)
from segapp.training import AugmentConfig, CocoInstanceDataset, TrainConfig, Trainer
from segapp.training.data import collate

SIZE = 128
CL = torch.channels_last


def _small(seed: int = 0):
    torch.manual_seed(seed)
    model = build_model("segapp_small", device="cpu", image_size=SIZE, random_init=True)
    with torch.no_grad():
        reference.randomize_(model, seed)  # the click downscaler's zero-initialised last layer too
    return model.train()


def _plain(model):
    twin = copy.deepcopy(model)
    for part in (twin.prompt_encoder, twin.mask_decoder):
        assert part.matmul_convs
        part.matmul_convs = False
    return twin


def _close(fast: torch.Tensor, plain: torch.Tensor, what: str, rtol: float = 1e-4) -> None:
    """Equal up to float rounding relative to the tensor's scale (gradients that are zero in
    exact arithmetic, e.g. of attention key biases, are rounding noise on both sides)."""
    scale = plain.abs().max().clamp(min=1e-6)
    assert fast.shape == plain.shape, (what, fast.shape, plain.shape)
    assert ((fast - plain).abs().max() / scale).item() < rtol, what


def _grads(model) -> dict[str, torch.Tensor | None]:
    return {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}


def _same_grads(fast_model, plain_model, rtol: float = 1e-4, atol_of_top: float = 1e-5) -> None:
    """Every gradient equal up to float rounding: within `rtol` of its own largest entry or, for
    gradients that are zero in exact arithmetic (attention key biases), `atol_of_top` of the
    model's largest gradient."""
    fast, plain = _grads(fast_model), _grads(plain_model)
    top = max(g.abs().max() for g in plain.values() if g is not None)
    for name, g in plain.items():
        # A parameter the plain path reaches with a zero gradient must get one (not None):
        # AdamW still decays it.
        assert (fast[name] is None) == (g is None), name
        if g is not None:
            error = (fast[name] - g).abs().max()
            assert error <= rtol * g.abs().max() + atol_of_top * top, (name, float(error), float(g.abs().max()))


def test_patch_matmuls_equal_the_convolutions():
    torch.manual_seed(0)
    x = torch.randn(3, 6, 8, 10)
    down = torch.nn.Conv2d(6, 5, kernel_size=2, stride=2)
    up = torch.nn.ConvTranspose2d(6, 4, kernel_size=2, stride=2)
    one = torch.nn.Conv2d(6, 7, kernel_size=1)
    nhwc = x.permute(0, 2, 3, 1)
    close = dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(conv2x2_planes(x, down), down(x), **close)
    torch.testing.assert_close(conv2x2_to_nhwc(x, down).permute(0, 3, 1, 2), down(x), **close)
    torch.testing.assert_close(conv_transpose2x2_nhwc(nhwc, up).permute(0, 3, 1, 2), up(x), **close)
    torch.testing.assert_close(conv1x1_nhwc(nhwc, one).permute(0, 3, 1, 2), one(x), **close)
    norm = LayerNorm2d(6)
    with torch.no_grad():
        norm.weight.normal_(), norm.bias.normal_()
    torch.testing.assert_close(layer_norm_planes(x * 5 + 3, norm), norm(x * 5 + 3), **close)
    with pytest.raises(ValueError, match="2x2 stride-2"):
        conv2x2_planes(x, torch.nn.Conv2d(6, 5, kernel_size=3, stride=2))


@pytest.mark.parametrize("kind", ["mask_and_clicks", "box_first", "point_first"])
def test_prompt_encoder_matmul_convs_equal_plain(kind):
    model = _small()
    fast, plain = model.prompt_encoder, _plain(model).prompt_encoder
    assert fast.box_mask_prompt and fast.click_map_sigma > 0  # what segapp_small uses
    gen = torch.Generator().manual_seed(1)
    p, side = 5, fast.mask_input_size[0]
    if kind == "box_first":
        coords = torch.rand(p, 2, 2, generator=gen).sort(dim=1).values * SIZE
        labels = torch.tensor([2, 3]).expand(p, 2)
        masks = None
    else:
        coords = torch.rand(p, 4, 2, generator=gen) * SIZE
        labels = torch.randint(0, 2, (p, 4), generator=gen)
        labels[0, -1] = -1  # a padding point
        masks = torch.randn(p, 1, side, side, generator=gen) * 8 if kind == "mask_and_clicks" else None
    outs = []
    for encoder in (fast, plain):
        sparse, dense = encoder(points=(coords, labels), boxes=None, masks=masks)
        (sparse.square().sum() + dense.sin().sum()).backward()
        outs.append((sparse, dense))
    _close(outs[0][0], outs[1][0], "sparse")
    _close(outs[0][1], outs[1][1], "dense")
    _same_grads(fast, plain)
    # Eval mode is the plain path, bit for bit.
    fast.eval(), plain.eval()
    assert torch.equal(fast(points=(coords, labels), boxes=None, masks=masks)[1],
                       plain(points=(coords, labels), boxes=None, masks=masks)[1])


@pytest.mark.parametrize("multimask", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_mask_decoder_matmul_convs_equal_plain(multimask, channels_last):
    model = _small()
    fast, plain = model.mask_decoder, _plain(model).mask_decoder
    gen = torch.Generator().manual_seed(2)
    p, c, h = 4, fast.transformer_dim, SIZE // 16
    fmt = CL if channels_last else torch.contiguous_format
    image = torch.randn(p, c, h, h, generator=gen).contiguous(memory_format=fmt)
    high_res = [torch.randn(p, c // 8, 4 * h, 4 * h, generator=gen).contiguous(memory_format=fmt),
                torch.randn(p, c // 4, 2 * h, 2 * h, generator=gen).contiguous(memory_format=fmt)]
    sparse = torch.randn(p, 3, c, generator=gen)
    dense = torch.randn(p, c, h, h, generator=gen)
    pe = torch.randn(1, c, h, h, generator=gen)
    outs, inputs = [], []
    for decoder in (fast, plain):
        leaves = [t.detach().clone().requires_grad_() for t in (image, *high_res, sparse, dense)]
        out = decoder(image_embeddings=leaves[0], image_pe=pe, sparse_prompt_embeddings=leaves[3],
                      dense_prompt_embeddings=leaves[4], multimask_output=multimask, repeat_image=False,
                      high_res_features=leaves[1:3])
        (out.masks.sin().sum() + out.iou_pred.square().sum() + out.object_score_logits.sum()
         + out.sam_tokens.square().sum()).backward()
        outs.append(out)
        inputs.append(leaves)
    for name in ("masks", "iou_pred", "sam_tokens", "object_score_logits"):
        _close(getattr(outs[0], name), getattr(outs[1], name), name)
    for i, (a, b) in enumerate(zip(*inputs)):
        _close(a.grad, b.grad, f"input {i}")
    _same_grads(fast, plain)


@pytest.mark.parametrize("use_box", [True, False])
def test_training_loss_and_gradients_fast_equal_plain(tmp_path, use_box):
    ann, images = make_coco(tmp_path)
    data = CocoInstanceDataset(ann, images, SIZE, augment=AugmentConfig.none())
    batch = collate([data[0], data[1]])
    config = TrainConfig(batch_size=2, instances_per_image=2, correction_rounds=3, augment=AugmentConfig.none())
    results = []
    for model in (_small(), _plain(_small())):
        trainer = Trainer(model, data, config, tmp_path / f"out{len(results)}")
        model.train()
        torch.manual_seed(0)  # the trunk's stochastic depth draws from the global generator
        loss, stats = trainer.compute_loss(batch, trainer.generator(7), use_box)
        loss.backward()
        results.append((model, loss.detach(), stats.values))
    (fast, fast_loss, fast_stats), (plain, plain_loss, plain_stats) = results
    _close(fast_loss, plain_loss, "loss", rtol=1e-5)
    _close(fast_stats, plain_stats, "statistics", rtol=1e-5)
    # Rounding differences grow through every round and the whole trunk (up to ~4e-4 of the
    # patch embedding's gradient measured), and a ReLU of the decoder's token MLP whose input
    # is within rounding of 0 may pass or not on either side: one hidden unit's row of
    # gradients then differs (measured: 1% of that weight's largest entry, 2e-4 of the
    # model's); the gradient norm agrees to 1e-4.
    _same_grads(fast, plain, rtol=2e-3, atol_of_top=1e-3)
    norm = [torch.sqrt(sum(g.square().sum() for g in _grads(m).values() if g is not None)) for m in (fast, plain)]
    _close(norm[0], norm[1], "gradient norm")


@pytest.mark.parametrize("use_box", [True, False])
@pytest.mark.parametrize("freeze", [(), ("image_encoder",)])
def test_rounds_split_over_threads_equal_one_thread(tmp_path, use_box, freeze):
    ann, images = make_coco(tmp_path)
    data = CocoInstanceDataset(ann, images, SIZE, augment=AugmentConfig.none())
    batch = collate([data[0], data[1], data[0]])  # 3 images of one instance each: parts of 2 and 1
    config = TrainConfig(batch_size=3, instances_per_image=2, correction_rounds=3, augment=AugmentConfig.none(),
                         freeze=freeze)
    results = []
    for threads in (1, 2):
        model = _small()
        trainer = Trainer(model, data, config, tmp_path / f"out{threads}")
        trainer.round_threads = threads
        model.train()
        loss, stats = trainer.compute_loss(batch, trainer.generator(7), use_box)
        loss.backward()
        results.append((model, loss.detach(), stats.values))
        with torch.no_grad():  # and without gradients (as when a fixed batch's loss is read)
            _close(trainer.compute_loss(batch, trainer.generator(7), use_box)[0], loss.detach(), "no_grad loss")
    (one, one_loss, one_stats), (split, split_loss, split_stats) = results
    assert batch.masks.shape[0] == 3
    _close(split_loss, one_loss, "loss", rtol=1e-5)
    _close(split_stats, one_stats, "statistics", rtol=1e-5)
    _same_grads(split, one, rtol=2e-3, atol_of_top=1e-3)
    if freeze:
        assert all(p.grad is None for p in split.image_encoder.parameters())


def test_training_with_round_threads_is_reproducible(tmp_path):
    """Two runs with the rounds split over 2 threads end with the same weights, bit for bit."""
    ann, images = make_coco(tmp_path)
    data = CocoInstanceDataset(ann, images, SIZE, augment=AugmentConfig.none())
    config = TrainConfig(epochs=1, batch_size=2, instances_per_image=2, correction_rounds=2, workers=0,
                         augment=AugmentConfig.none(), warmup_steps=0, log_every=1)
    weights = []
    for run in range(2):
        model = _small()
        trainer = Trainer(model, data, config, tmp_path / f"run{run}")
        trainer.round_threads = 2
        trainer.fit()
        weights.append({k: v.clone() for k, v in model.state_dict().items()})
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_resume_with_round_threads_gives_the_weights_of_a_straight_run(tmp_path):
    ann, images = make_coco(tmp_path)
    data = CocoInstanceDataset(ann, images, SIZE, augment=AugmentConfig.none())

    def trainer(out, epochs):
        config = TrainConfig(epochs=epochs, batch_size=2, instances_per_image=2, correction_rounds=2, workers=0,
                             augment=AugmentConfig.none(), warmup_steps=0, log_every=1)
        result = Trainer(_small(), data, config, out)
        result.round_threads = 2
        return result

    straight = trainer(tmp_path / "a", 2)
    straight.fit()
    first = trainer(tmp_path / "b", 2)
    first.config.epochs = 1  # stop after one epoch, with the schedule of a two-epoch run
    first.fit()
    resumed = trainer(tmp_path / "b", 2)
    assert resumed.fit(resume=True)["steps"] == 2
    for (k, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
