"""Every fast path against its plain twin: the same outputs, on random weights and inputs
that take the fast path (checked with a spy where the path is chosen by layout or shape).

Each fast path is behind an explicit argument whose default is the fast path; turning it off
gives the plain path:
- MemoryAttention(reuse_broadcast_frame, per_object_on_cpu)
- MemoryEncoder(reuse_broadcast_frame)
- TwoWayTransformer(factorized_attention)
- MaskDecoder(share_image_side)
- rope.rotate_pairs(complex_kernels)
- amg.count_above(use_numpy)
- AutomaticMaskGenerator(cpu_decode_chunk)
- ImagePredictor(zoom_batch): tests/test_box_zoom.py
- video.tracker.fill_holes(on_device): tests/test_video_host_stalls.py
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import reference
import segapp
from segapp import amg
from segapp.automatic_mask_generator import AutomaticMaskGenerator
from segapp.modeling.mask_decoder import MaskDecoder
from segapp.modeling.memory_attention import MemoryAttention
from segapp.modeling.memory_encoder import MemoryEncoder
from segapp.modeling.rope import axial_angles, rotate_pairs
from segapp.modeling.two_way_transformer import Attention, TwoWayTransformer
from tiny_models import say_objects_present

# Fast and plain paths do the same arithmetic, at most in another order or batch grouping.
TIGHT = dict(rtol=1e-5, atol=1e-5)


def _random(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    with torch.no_grad():
        reference.randomize_(module, seed)
    return module.eval()


def _twin(module: torch.nn.Module, **flags) -> torch.nn.Module:
    """A copy of `module` (same weights) with the given attributes set."""
    twin = copy.deepcopy(module)
    for name, value in flags.items():
        assert hasattr(twin, name), name
        setattr(twin, name, value)
    return twin


class Spy:
    """Records the leading dim of the first tensor argument of each call of a bound method, or
    of a submodule through a forward pre-hook (spy only on modules the test itself built)."""

    def __init__(self, monkeypatch, obj, name: str) -> None:
        self.batches: list[int] = []
        inner = getattr(obj, name)

        def record(args, kwargs) -> None:
            first = next(a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor))
            self.batches.append(first.shape[0])

        if isinstance(inner, torch.nn.Module):
            inner.register_forward_pre_hook(lambda _, args, kwargs: record(args, kwargs), with_kwargs=True)
            return

        def call(*args, **kwargs):
            record(args, kwargs)
            return inner(*args, **kwargs)

        monkeypatch.setattr(obj, name, call)


# ------------------------------------------------------------------------ memory attention
@pytest.fixture(scope="module")
def memory_attention():
    return _random(MemoryAttention(d_model=32, kv_in_dim=16, num_layers=2, num_heads=2, dim_feedforward=64), 0)


def _broadcast_frame_inputs(batch=3, h=4, w=6, frames=2, ptrs=4, seed=0):
    """Sequence-first inputs whose current frame is one row expanded over the batch (stride 0)."""
    gen = torch.Generator().manual_seed(seed)
    curr = torch.randn(h * w, 1, 32, generator=gen).expand(-1, batch, -1)
    curr_pos = torch.randn(h * w, 1, 32, generator=gen).expand(-1, batch, -1)
    memory = torch.randn(frames * h * w + ptrs, batch, 16, generator=gen)
    memory_pos = torch.randn(frames * h * w + ptrs, batch, 16, generator=gen)
    return (curr, memory, curr_pos, memory_pos), dict(num_obj_ptr_tokens=ptrs, grid_hw=(h, w))


def test_memory_attention_broadcast_frame_fast_path_equals_plain(memory_attention, monkeypatch):
    args, kwargs = _broadcast_frame_inputs()
    assert args[0].stride(1) == 0
    plain = _twin(memory_attention, reuse_broadcast_frame=False)
    spy = Spy(monkeypatch, memory_attention.layers[0], "self_attention_block")
    with torch.no_grad():
        fast_out = memory_attention(*args, **kwargs)
        assert spy.batches == [1]  # the first self-attention ran once, for all 3 objects
        plain_out = plain(*args, **kwargs)
        contiguous_out = memory_attention(*(a.contiguous() for a in args), **kwargs)
        assert len(spy.batches) == 1 + 3  # not broadcast: once per object
    assert fast_out.shape == (24, 3, 32)
    torch.testing.assert_close(fast_out, plain_out, **TIGHT)
    torch.testing.assert_close(contiguous_out, plain_out, **TIGHT)


def test_memory_attention_per_object_on_cpu_equals_whole_batch(memory_attention):
    gen = torch.Generator().manual_seed(3)
    curr, curr_pos = torch.randn(24, 3, 32, generator=gen), torch.randn(24, 3, 32, generator=gen)
    memory, memory_pos = torch.randn(52, 3, 16, generator=gen), torch.randn(52, 3, 16, generator=gen)
    whole = _twin(memory_attention, per_object_on_cpu=False)
    with torch.no_grad():
        fast_out = memory_attention(curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens=4, grid_hw=(4, 6))
        plain_out = whole(curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens=4, grid_hw=(4, 6))
    torch.testing.assert_close(fast_out, plain_out, **TIGHT)


def test_memory_attention_layer_arguments_are_checked():
    attention = MemoryAttention(d_model=32, kv_in_dim=16, num_layers=1, num_heads=4, dim_feedforward=64)
    assert attention.layers[0].self_attn.num_heads == 4 and attention.layers[0].linear1.out_features == 64
    assert attention.layers[0].cross_attn_image.kv_in_dim == 16
    with pytest.raises(TypeError, match="num_head"):
        MemoryAttention(d_model=32, kv_in_dim=16, num_layers=1, num_head=4)


# -------------------------------------------------------------------------- memory encoder
def test_memory_encoder_broadcast_frame_fast_path_equals_plain(monkeypatch):
    encoder = _random(MemoryEncoder(out_dim=16, in_dim=32, fuser_num_layers=1), 1)
    plain = _twin(encoder, reuse_broadcast_frame=False)
    gen = torch.Generator().manual_seed(1)
    pix_feat = torch.randn(1, 32, 4, 6, generator=gen).expand(3, -1, -1, -1)
    masks = torch.randn(3, 1, 64, 96, generator=gen)
    spy = Spy(monkeypatch, encoder, "pix_feat_proj")
    with torch.no_grad():
        fast_out, plain_out = encoder(pix_feat, masks), plain(pix_feat, masks)
    assert spy.batches == [1]
    for fast, slow in zip(fast_out, plain_out):
        assert fast.shape == (3, 16, 4, 6)
        torch.testing.assert_close(fast, slow, **TIGHT)


# ------------------------------------------------------------------- two-way transformer
def _transformer() -> TwoWayTransformer:
    return _random(TwoWayTransformer(depth=2, embedding_dim=32, num_heads=2, mlp_dim=64), 2)


def test_two_way_transformer_factorized_attention_equals_plain(monkeypatch):
    transformer = _transformer()
    plain = _twin(transformer, factorized_attention=False)
    gen = torch.Generator().manual_seed(2)
    image = torch.randn(1, 32, 8, 8, generator=gen)  # one image shared by every prompt
    image_pe = torch.randn(1, 32, 8, 8, generator=gen)
    points = torch.randn(5, 7, 32, generator=gen)
    calls = []
    monkeypatch.setattr(Attention, "tokens_to_image",
                        lambda self, *a, _inner=Attention.tokens_to_image: calls.append(1) or _inner(self, *a))
    with torch.no_grad():
        fast_tokens, fast_image = transformer(image, image_pe, points)
        assert calls, "the factorised attention did not run"
        calls.clear()
        plain_tokens, plain_image = plain(image, image_pe, points)
        assert not calls
    assert fast_tokens.shape == (5, 7, 32) and fast_image.shape == (5, 64, 32)
    torch.testing.assert_close(fast_tokens, plain_tokens, **TIGHT)
    torch.testing.assert_close(fast_image, plain_image, **TIGHT)
    # The plain path on the image repeated per prompt: the same again.
    with torch.no_grad():
        repeated_tokens, repeated_image = plain(image.expand(5, -1, -1, -1).contiguous(), image_pe, points)
    torch.testing.assert_close(repeated_tokens, plain_tokens, **TIGHT)
    torch.testing.assert_close(repeated_image, plain_image, **TIGHT)


# ----------------------------------------------------------------------------- mask decoder
@pytest.mark.parametrize("multimask", [True, False])
def test_mask_decoder_shared_image_side_equals_repeated_image(multimask, monkeypatch):
    decoder = _random(MaskDecoder(transformer_dim=32, transformer=_transformer(), iou_head_hidden_dim=32,
                                  use_high_res_features=True, pred_obj_scores=True, pred_obj_scores_mlp=True,
                                  dynamic_multimask_via_stability=True), 3)
    plain = _twin(decoder, share_image_side=False)
    gen = torch.Generator().manual_seed(3)
    image = torch.randn(1, 32, 8, 8, generator=gen)
    image_pe = torch.randn(1, 32, 8, 8, generator=gen)
    sparse = torch.randn(4, 3, 32, generator=gen)
    dense = torch.randn(1, 32, 8, 8, generator=gen).expand(4, -1, -1, -1)  # no mask prompts: broadcast
    high_res = [torch.randn(1, 4, 32, 32, generator=gen), torch.randn(1, 8, 16, 16, generator=gen)]
    spy = Spy(monkeypatch, decoder, "transformer")
    with torch.no_grad():
        fast = decoder(image, image_pe, sparse, dense, multimask, repeat_image=True, high_res_features=high_res)
        slow = plain(image, image_pe, sparse, dense, multimask, repeat_image=True, high_res_features=high_res)
    assert spy.batches == [1]  # the image side went into the transformer at batch 1
    for name in ("masks", "iou_pred", "sam_tokens", "object_score_logits"):
        torch.testing.assert_close(getattr(fast, name), getattr(slow, name), **TIGHT)


# ----------------------------------------------------------------------------------- RoPE
def test_rope_real_arithmetic_equals_complex_kernels():
    gen = torch.Generator().manual_seed(4)
    rotations = torch.polar(torch.ones(24, 4), axial_angles(8, 4, 6))
    x = torch.randn(2, 3, 2 * 24, 8, generator=gen)  # two copies of a 4 x 6 grid folded in
    fast = rotate_pairs(x, rotations, complex_kernels=True)
    torch.testing.assert_close(fast, rotate_pairs(x, rotations, complex_kernels=False), **TIGHT)
    torch.testing.assert_close(rotate_pairs(x, rotations), fast, rtol=0, atol=0)  # the CPU default
    assert not torch.allclose(fast, x)


# ------------------------------------------------------------------------ AMG pixel counts
def test_count_above_numpy_equals_torch():
    logits = torch.randn(3, 5, 20, 30, generator=torch.Generator().manual_seed(5))
    numpy_counts = amg.count_above(logits, 0.25, use_numpy=True)
    assert torch.equal(numpy_counts, amg.count_above(logits, 0.25, use_numpy=False))
    assert torch.equal(numpy_counts, amg.count_above(logits, 0.25))
    assert numpy_counts.shape == (3, 5) and numpy_counts.dtype == torch.int64
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="CPU tensor"):
            amg.count_above(logits.cuda(), 0.0, use_numpy=True)


# ---------------------------------------------------------------------- whole-model paths
@pytest.fixture(scope="module")
def tiny_model():
    return segapp.build_model("test_tiny", device="cpu")


def test_many_prompts_on_one_image_fast_equals_plain(tiny_model):
    """ImagePredictor with several point prompts at once goes through the decoder's shared image
    side and the factorised attention; with both off, the same masks and scores."""
    image = np.random.default_rng(6).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    coords = np.array([[[20, 30]], [[100, 60]], [[64, 48]]], dtype=np.float32)
    labels = np.ones((3, 1), dtype=np.int32)
    plain_model = copy.deepcopy(tiny_model)
    plain_model.mask_decoder.share_image_side = False
    plain_model.mask_decoder.transformer.factorized_attention = False
    results = []
    for model in (tiny_model, plain_model):
        predictor = segapp.ImagePredictor(model, box_zoom=0)
        predictor.set_image(image)
        results.append(predictor.predict(coords, labels, multimask_output=True, return_logits=True))
    for fast, plain in zip(*results):
        torch.testing.assert_close(torch.from_numpy(fast), torch.from_numpy(plain), **TIGHT)


def test_amg_cpu_decode_chunk_equals_points_per_batch(tiny_model, monkeypatch):
    """The CPU chunking of segment-everything's decoder calls changes no mask."""
    import segapp.automatic_mask_generator as amg_module

    image = np.random.default_rng(7).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    # Make the CPU chunk 3 prompts (the tiny model's tokens are small), against batches of 16.
    per_prompt = 32 * 8 * 8 * 4
    monkeypatch.setattr(amg_module, "CPU_DECODE_CHUNK_BYTES", 3 * per_prompt)
    records = []
    for chunk in (True, False):
        generator = AutomaticMaskGenerator(tiny_model, points_per_side=4, points_per_batch=16,
                                           pred_iou_thresh=0.0, stability_score_thresh=0.0,
                                           cpu_decode_chunk=chunk)
        calls = []
        decode = generator.predictor.decode_low_res
        monkeypatch.setattr(generator.predictor, "decode_low_res",
                            lambda pts, *a, **k: calls.append(len(pts)) or decode(pts, *a, **k))
        records.append(generator.generate(image))
        assert max(calls) == (3 if chunk else 16)
    fast, plain = records
    assert len(fast) == len(plain) > 0
    for a, b in zip(fast, plain):
        assert np.array_equal(a["segmentation"], b["segmentation"])
        assert a["predicted_iou"] == pytest.approx(b["predicted_iou"], rel=1e-5, abs=1e-5)


def test_video_tracking_of_several_objects_fast_equals_plain(tiny_model, monkeypatch):
    """Tracking two objects: their frame features are one row expanded over the objects, which
    takes the memory encoder's and memory attention's broadcast paths (and, on CPU, attention
    one object at a time); with every switch off, the same masks on every frame."""
    from segapp.video.predictor import VideoPredictor

    rng = np.random.default_rng(8)
    frames = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(4)]
    fast_model = copy.deepcopy(tiny_model)
    say_objects_present(fast_model, fill=5.0)  # so that tracking has masks to carry
    plain_model = copy.deepcopy(fast_model)
    plain_model.memory_attention.reuse_broadcast_frame = False
    plain_model.memory_attention.per_object_on_cpu = False
    plain_model.memory_encoder.reuse_broadcast_frame = False
    plain_model.mask_decoder.share_image_side = False
    plain_model.mask_decoder.transformer.factorized_attention = False
    projections = Spy(monkeypatch, fast_model.memory_encoder, "pix_feat_proj")
    self_attentions = Spy(monkeypatch, fast_model.memory_attention.layers[0], "self_attention_block")
    outputs = []
    for model in (fast_model, plain_model):
        predictor = VideoPredictor(model)
        state = predictor.init_state(frames)
        predictor.add_new_points_or_box(state, 0, 1, points=[[15, 20]], labels=[1])
        predictor.add_new_points_or_box(state, 0, 2, box=[30, 10, 60, 40])
        outputs.append([(f, list(ids), m) for f, ids, m in predictor.propagate_in_video(state)])
    fast, plain = outputs
    assert projections.batches and set(projections.batches) == {1}  # each frame projected once for both
    assert self_attentions.batches == [1, 1, 1]  # frames 1-3: once per frame, not once per object
    assert [(f, ids) for f, ids, _ in fast] == [(f, ids) for f, ids, _ in plain] == [(i, [1, 2]) for i in range(4)]
    for (_, _, a), (_, _, b) in zip(fast, plain):
        torch.testing.assert_close(a, b, **TIGHT)
