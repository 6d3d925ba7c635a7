"""Memory encoder, memory attention and RoPE against the reference sam2 modules.

The reference modules are built from the memory nodes of the reference's own
configs/sam2.1/sam2.1_hiera_t.yaml (the same in all eight official configs), given random
weights, and their state dict is loaded strictly into segapp's modules.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch

import reference
from segapp.modeling.memory_attention import MemoryAttention, RoPEAttention
from segapp.modeling.memory_encoder import MemoryEncoder
from segapp.modeling.rope import AxialRoPE, axial_angles

REL_TOL = 1e-5

# The two nodes as proposed for segapp's base config (the official values throughout); the
# relative interpolations assume both nodes sit side by side under `model:`.
SEGAPP_YAML = """
model:
  memory_attention:
    _target_: segapp.modeling.memory_attention.MemoryAttention
    d_model: 256
    num_layers: 4
    pos_enc_at_input: true
    kv_in_dim: ${..memory_encoder.out_dim}
    num_heads: 1
    downsample_rate: 1
    dim_feedforward: 2048
    dropout: 0.1
    activation: relu
    rope_theta: 10000.0
    pos_enc_at_attn: false
    pos_enc_at_cross_attn_keys: true
    pos_enc_at_cross_attn_queries: false
  memory_encoder:
    _target_: segapp.modeling.memory_encoder.MemoryEncoder
    out_dim: 64
    in_dim: ${..memory_attention.d_model}
    downsampler_kernel_size: 3
    downsampler_stride: 2
    downsampler_padding: 1
    downsampler_total_stride: 16
    fuser_num_layers: 2
    fuser_kernel_size: 7
    fuser_padding: 3
    layer_scale_init_value: 1.0e-06
    use_dwconv: true
    pos_temperature: 10000.0
"""


def assert_rel_close(actual: torch.Tensor, expected: torch.Tensor, tol: float = REL_TOL) -> None:
    assert actual.shape == expected.shape
    err = (actual - expected).abs().max().item() / expected.abs().max().clamp_min(1e-12).item()
    assert err <= tol, f"relative error {err:.3g} > {tol}"


@pytest.fixture(scope="module")
def ref_nodes(ref):
    """The reference config's memory_attention and memory_encoder nodes."""
    from omegaconf import OmegaConf

    path = Path(ref.__file__).parent / reference.REFERENCE_CONFIGS["sam2.1_hiera_t"]
    return OmegaConf.load(path).model


def _build_reference(node, seed: int):
    from hydra.utils import instantiate

    torch.manual_seed(seed)  # randomize_ perturbs the initial biases: make those repeatable too
    module = instantiate(node)
    reference.randomize_(module, seed)
    return module.eval()


@pytest.fixture(scope="module")
def attention_pair(ref_nodes):
    ref_module = _build_reference(ref_nodes.memory_attention, seed=0)
    ours = MemoryAttention()
    ours.load_state_dict(ref_module.state_dict(), strict=True)
    return ours.eval(), ref_module


@pytest.fixture(scope="module")
def encoder_pair(ref_nodes):
    ref_module = _build_reference(ref_nodes.memory_encoder, seed=1)
    ours = MemoryEncoder()
    ours.load_state_dict(ref_module.state_dict(), strict=True)
    return ours.eval(), ref_module


def _memory_inputs(side: int, batch: int, frames: int, ptr_tokens: int, seed: int = 0, dim=256, mem_dim=64):
    gen = torch.Generator().manual_seed(seed)
    tokens = side * side
    mem_len = frames * tokens + ptr_tokens
    return (
        torch.randn(tokens, batch, dim, generator=gen),
        torch.randn(mem_len, batch, mem_dim, generator=gen),
        torch.randn(tokens, batch, dim, generator=gen),
        torch.randn(mem_len, batch, mem_dim, generator=gen),
    )


# ---------------------------------------------------------------------------------- RoPE


@pytest.mark.parametrize("side, copies, exclude", [(8, 1, 0), (8, 3, 0), (8, 2, 5), (16, 2, 4), (4, 0, 6)])
def test_rope_matches_reference(ref, side, copies, exclude):
    from sam2.modeling.position_encoding import apply_rotary_enc, compute_axial_cis

    head_dim = 32
    gen = torch.Generator().manual_seed(side + copies + exclude)
    q = torch.randn(2, 3, side * side, head_dim, generator=gen)
    k = torch.randn(2, 3, copies * side * side + exclude, head_dim, generator=gen)

    num_rope = k.shape[-2] - exclude
    exp_q, exp_k = apply_rotary_enc(q, k[:, :, :num_rope], compute_axial_cis(head_dim, side, side), True)
    exp_k = torch.cat((exp_k, k[:, :, num_rope:]), dim=-2)

    got_q, got_k = AxialRoPE(head_dim, repeat_k=True)(q, k, num_k_exclude=exclude)
    assert_rel_close(got_q, exp_q)
    assert_rel_close(got_k, exp_k)
    assert torch.equal(got_k[:, :, num_rope:], k[:, :, num_rope:])  # object pointers untouched


def _explicit_rotation(vec: torch.Tensor, x: int, y: int, theta: float) -> torch.Tensor:
    """Rotate pair j of vec by x * f_j (first half of the pairs) or y * f_j (second half)."""
    d = vec.shape[-1]
    out = torch.empty_like(vec)
    for j in range(d // 2):
        coord, i = (x, j) if j < d // 4 else (y, j - d // 4)
        angle = coord * theta ** (-4.0 * i / d)
        c, s = math.cos(angle), math.sin(angle)
        a, b = vec[2 * j].item(), vec[2 * j + 1].item()
        out[2 * j], out[2 * j + 1] = c * a - s * b, s * a + c * b
    return out


def test_rope_non_square_grid_rotates_each_token_by_its_xy():
    h, w, d, theta = 3, 5, 8, 100.0
    rope = AxialRoPE(d, theta=theta, repeat_k=True)
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(1, 1, h * w, d, generator=gen)
    k = torch.randn(1, 1, 2 * h * w + 1, d, generator=gen)
    got_q, got_k = rope(q, k, grid_hw=(h, w), num_k_exclude=1)
    for t in range(h * w):
        x, y = t % w, t // w
        torch.testing.assert_close(got_q[0, 0, t], _explicit_rotation(q[0, 0, t], x, y, theta))
        for frame in range(2):  # each memory frame's token t sits at the same (x, y)
            kt = frame * h * w + t
            torch.testing.assert_close(got_k[0, 0, kt], _explicit_rotation(k[0, 0, kt], x, y, theta))
    assert torch.equal(got_k[0, 0, -1], k[0, 0, -1])


def test_rope_logits_depend_on_relative_offset_only():
    h, w, d = 4, 6, 16
    gen = torch.Generator().manual_seed(1)
    q_vec, k_vec = torch.randn(d, generator=gen), torch.randn(d, generator=gen)
    # The same content at every token: any difference between logits comes from position.
    q = q_vec.expand(1, 1, h * w, d)
    k = k_vec.expand(1, 1, h * w, d)
    rq, rk = AxialRoPE(d)(q, k, grid_hw=(h, w))
    logits = (rq @ rk.transpose(-2, -1))[0, 0].reshape(h, w, h, w)  # [yq, xq, yk, xk]
    for dy, dx in [(0, 0), (1, 2), (-2, 3), (3, -5)]:
        values = [logits[yq, xq, yq + dy, xq + dx]
                  for yq in range(h) for xq in range(w) if 0 <= yq + dy < h and 0 <= xq + dx < w]
        torch.testing.assert_close(torch.stack(values), values[0].expand(len(values)))
    assert not torch.allclose(logits[0, 0, 0, 1], logits[0, 0, 1, 0])  # x and y are told apart


def test_rope_angle_table_is_row_major():
    angles = axial_angles(8, 2, 3)
    assert angles.shape == (6, 4)
    # token 4 is (x=1, y=1); token 5 is (x=2, y=1); f_0 = 1 in both halves
    assert angles[4, 0].item() == 1.0 and angles[4, 2].item() == 1.0
    assert angles[5, 0].item() == 2.0 and angles[5, 2].item() == 1.0


def test_rope_rejects_inconsistent_shapes():
    q = torch.randn(1, 1, 12, 8)
    with pytest.raises(ValueError, match="square grid"):
        AxialRoPE(8)(q, q)
    with pytest.raises(ValueError, match="does not match"):
        AxialRoPE(8)(q, q, grid_hw=(4, 4))
    with pytest.raises(ValueError, match="repeat_k"):
        AxialRoPE(8)(q, torch.randn(1, 1, 24, 8), grid_hw=(3, 4))
    with pytest.raises(ValueError, match="whole number"):
        AxialRoPE(8, repeat_k=True)(q, torch.randn(1, 1, 30, 8), grid_hw=(3, 4))
    with pytest.raises(ValueError, match="divisible by 4"):
        AxialRoPE(6)


def test_rope_table_made_in_inference_mode_still_trains():
    rope = AxialRoPE(8)
    with torch.inference_mode():
        rope(torch.randn(1, 1, 9, 8), torch.randn(1, 1, 9, 8), grid_hw=(3, 3))
    q = torch.randn(1, 1, 9, 8, requires_grad=True)
    rq, rk = rope(q, q, grid_hw=(3, 3))
    (rq * rk).sum().backward()
    assert q.grad is not None and q.grad.abs().sum() > 0


# -------------------------------------------------------------------------- RoPEAttention


@pytest.mark.parametrize("kind", ["self_attention", "cross_attention"])
def test_rope_attention_matches_reference(ref_nodes, kind):
    node = ref_nodes.memory_attention.layer[kind]
    ref_attn = _build_reference(node, seed=2)
    cross = kind == "cross_attention"
    ours = RoPEAttention(256, 1, dropout=0.1, kv_in_dim=64 if cross else None, rope_k_repeat=cross)
    ours.load_state_dict(ref_attn.state_dict(), strict=True)
    ours.eval()

    side, ptrs = 16, (6 if cross else 0)
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(2, side * side, 256, generator=gen)
    kv = torch.randn(2, (2 if cross else 1) * side * side + ptrs, 64 if cross else 256, generator=gen)
    with torch.no_grad():
        expected = ref_attn(q, kv, kv, num_k_exclude_rope=ptrs)
        assert_rel_close(ours(q, kv, kv, num_k_exclude_rope=ptrs), expected)
        ours.use_sdpa = False
        assert_rel_close(ours(q, kv, kv, num_k_exclude_rope=ptrs), expected)


# ------------------------------------------------------------------------ MemoryAttention


def test_memory_attention_has_official_keys(attention_pair):
    ours, ref_module = attention_pair
    keys = set(ours.state_dict())
    assert keys == set(ref_module.state_dict())
    for key in ["layers.0.self_attn.q_proj.weight", "layers.3.cross_attn_image.k_proj.weight",
                "layers.0.linear1.weight", "layers.2.norm3.bias", "norm.weight"]:
        assert key in keys
    assert ours.layers[0].cross_attn_image.k_proj.weight.shape == (256, 64)


@pytest.mark.parametrize(
    "side, batch, frames, ptr_tokens",
    [(64, 1, 2, 16), (32, 3, 2, 4), (16, 3, 2, 0), (16, 1, 7, 64)],
)
def test_memory_attention_matches_reference(attention_pair, side, batch, frames, ptr_tokens):
    ours, ref_module = attention_pair
    curr, memory, curr_pos, memory_pos = _memory_inputs(side, batch, frames, ptr_tokens)
    with torch.no_grad():
        expected = ref_module(curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens=ptr_tokens)
        got = ours(curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens=ptr_tokens)
    assert got.shape == (side * side, batch, 256)
    assert_rel_close(got, expected)


def test_memory_attention_math_fallback_agrees_with_sdpa(attention_pair):
    ours = copy.deepcopy(attention_pair[0])
    inputs = _memory_inputs(8, 2, 2, 4, seed=5)
    with torch.no_grad():
        fused = ours(*inputs, num_obj_ptr_tokens=4)
        for module in ours.modules():
            if isinstance(module, RoPEAttention):
                module.use_sdpa = False
        plain = ours(*inputs, num_obj_ptr_tokens=4)
    assert_rel_close(plain, fused)


def test_memory_attention_non_square_grid(attention_pair):
    ours = attention_pair[0]
    h, w, batch, frames, ptrs = 6, 10, 2, 3, 4
    gen = torch.Generator().manual_seed(7)
    curr = torch.randn(h * w, batch, 256, generator=gen)
    memory = torch.randn(frames * h * w + ptrs, batch, 64, generator=gen)
    pos, mpos = torch.randn_like(curr), torch.randn_like(memory)
    with torch.no_grad():
        out = ours(curr, memory, pos, mpos, num_obj_ptr_tokens=ptrs, grid_hw=(h, w))
        assert out.shape == (h * w, batch, 256) and torch.isfinite(out).all()
        # each batch element is processed independently of the others
        last = [t[:, 1:] for t in (curr, memory, pos, mpos)]
        single = ours(*last, num_obj_ptr_tokens=ptrs, grid_hw=(h, w))
        assert_rel_close(single, out[:, 1:])
        # the grid's shape matters: the same tokens read as 10 x 6 are encoded differently
        transposed = ours(curr, memory, pos, mpos, num_obj_ptr_tokens=ptrs, grid_hw=(w, h))
        assert not torch.allclose(transposed, out, atol=1e-4)
        with pytest.raises(ValueError, match="square grid"):
            ours(curr, memory, pos, mpos, num_obj_ptr_tokens=ptrs)


def test_memory_attention_explicit_square_grid_equals_default(attention_pair):
    ours = attention_pair[0]
    inputs = _memory_inputs(8, 1, 2, 3, seed=9)
    with torch.no_grad():
        torch.testing.assert_close(ours(*inputs, 3, grid_hw=(8, 8)), ours(*inputs, 3), rtol=0, atol=0)


def test_memory_attention_rejects_mismatched_inputs(attention_pair):
    ours = attention_pair[0]
    curr, memory, curr_pos, memory_pos = _memory_inputs(4, 2, 1, 0)
    with pytest.raises(ValueError, match="batch sizes"):
        ours(curr, memory[:, :1], curr_pos, memory_pos[:, :1])
    with pytest.raises(ValueError, match="channels"):
        ours(curr, torch.randn(16, 2, 256), curr_pos, torch.randn(16, 2, 256))


def test_memory_attention_trains_through_object_pointers():
    model = MemoryAttention(d_model=32, num_layers=1, kv_in_dim=16, dim_feedforward=64).train()
    curr = torch.randn(16, 2, 32)
    memory = torch.randn(2 * 16 + 3, 2, 16, requires_grad=True)
    out = model(curr, memory, torch.randn_like(curr), torch.randn_like(memory), num_obj_ptr_tokens=3)
    out.sum().backward()
    assert memory.grad[-3:].abs().sum() > 0 and memory.grad[:-3].abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters())


# -------------------------------------------------------------------------- MemoryEncoder


def test_memory_encoder_has_official_keys(encoder_pair):
    ours, ref_module = encoder_pair
    keys = set(ours.state_dict())
    assert keys == set(ref_module.state_dict())
    for key in ["mask_downsampler.encoder.0.weight", "mask_downsampler.encoder.1.weight",
                "mask_downsampler.encoder.12.weight", "pix_feat_proj.weight",
                "fuser.layers.0.dwconv.weight", "fuser.layers.1.norm.weight",
                "fuser.layers.0.pwconv1.weight", "fuser.layers.1.gamma", "out_proj.weight"]:
        assert key in keys


@pytest.mark.parametrize("skip_mask_sigmoid", [False, True])
@pytest.mark.parametrize("batch, hw", [(1, (16, 16)), (3, (8, 12))])
def test_memory_encoder_matches_reference(encoder_pair, skip_mask_sigmoid, batch, hw):
    ours, ref_module = encoder_pair
    gen = torch.Generator().manual_seed(batch)
    pix_feat = torch.randn(batch, 256, *hw, generator=gen)
    masks = 4 * torch.randn(batch, 1, 16 * hw[0], 16 * hw[1], generator=gen)
    if skip_mask_sigmoid:
        masks = (masks > 0).float()
    with torch.no_grad():
        expected = ref_module(pix_feat, masks, skip_mask_sigmoid=skip_mask_sigmoid)
        features, pos = ours(pix_feat, masks, skip_mask_sigmoid=skip_mask_sigmoid)
    assert features.shape == pos.shape == (batch, 64, *hw)
    assert_rel_close(features, expected["vision_features"])
    assert_rel_close(pos, expected["vision_pos_enc"][0])


def test_memory_encoder_sigmoid_switch_matters(encoder_pair):
    ours = encoder_pair[0]
    pix_feat, logits = torch.randn(1, 256, 4, 4), 3 * torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        from_logits = ours(pix_feat, logits).vision_features
        from_probs = ours(pix_feat, logits.sigmoid(), skip_mask_sigmoid=True).vision_features
        raw = ours(pix_feat, logits, skip_mask_sigmoid=True).vision_features
    assert_rel_close(from_probs, from_logits)
    assert not torch.allclose(raw, from_logits, atol=1e-3)


def test_memory_encoder_rejects_mask_of_wrong_size(encoder_pair):
    with pytest.raises(ValueError, match="feature map"):
        encoder_pair[0](torch.randn(1, 256, 4, 4), torch.randn(1, 1, 32, 32))


def test_memory_encoder_without_projection_or_layer_scale():
    encoder = MemoryEncoder(out_dim=32, in_dim=32, layer_scale_init_value=0.0, fuser_num_layers=1)
    keys = set(encoder.state_dict())
    assert not any(k.startswith("out_proj") or k.endswith("gamma") for k in keys)
    features, pos = encoder(torch.randn(2, 32, 3, 5), torch.randn(2, 1, 48, 80))
    assert features.shape == pos.shape == (2, 32, 3, 5)


# -------------------------------------------------------------------------------- config


def test_config_nodes_instantiate_with_official_parameters(ref_nodes, attention_pair, encoder_pair):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(SEGAPP_YAML)
    assert OmegaConf.to_container(cfg, resolve=True)  # plain data throughout
    for name, (_, ref_module) in [("memory_attention", attention_pair), ("memory_encoder", encoder_pair)]:
        module = instantiate(cfg.model[name])
        ours = {k: v.shape for k, v in module.state_dict().items()}
        assert ours == {k: v.shape for k, v in ref_module.state_dict().items()}
    attn = instantiate(cfg.model.memory_attention)
    assert attn.layers[0].dropout.p == 0.1 and attn.layers[0].self_attn.dropout_p == 0.1
