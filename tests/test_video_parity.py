"""segapp's video predictor against the reference SAM2VideoPredictor (sam2==1.1.0, fp32 on CPU).

Both load the same random official-format checkpoint, at a small image size to stay fast. The
object-score head is biased towards "present" in that checkpoint so that random weights still
produce masks to track (with the official random head most frames would be "no object" on both
sides and the comparison would be vacuous). The reference skips hole filling on CPU (it needs its
CUDA extension), so segapp runs with fill_hole_area=0 here; segapp's hole filling is tested
separately. The same scenario script runs on both predictors: they share one interface.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import reference
import segapp
from segapp.video.predictor import VideoPredictor

MIN_IOU = 0.99
MAX_REL = 1e-2


@pytest.fixture(scope="module")
def tracking_checkpoint(official_checkpoint, tmp_path_factory):
    sd = torch.load(official_checkpoint("sam2.1_hiera_t"), weights_only=True)
    head = "sam_mask_decoder.pred_obj_score_head.layers.2"
    sd["model"][f"{head}.weight"] *= 0.1
    sd["model"][f"{head}.bias"].fill_(1.0)
    path = tmp_path_factory.mktemp("video_ckpt") / "tiny_tracking.pt"
    torch.save(sd, path)
    return path


@pytest.fixture(scope="module")
def pair(tracking_checkpoint):
    """(reference predictor, segapp predictor) at image size 128, built once for the module:
    a session lives in its state object, so tests can share the predictors."""
    torch.manual_seed(0)
    ref = reference.build_reference_model("sam2.1_hiera_t", image_size=128, video=True,
                                          checkpoint=str(tracking_checkpoint))
    model = segapp.build_model("sam2.1_hiera_t", tracking_checkpoint, device="cpu", image_size=128)
    return ref, VideoPredictor(model, fill_hole_area=0)


@pytest.fixture(scope="module")
def synthetic_reference(pair, tmp_path_factory):
    """The synthetic clip and the reference's outputs on it (one run, compared to two segapp
    runs: fp32 and bf16 attention)."""
    folder = tmp_path_factory.mktemp("synthetic_clip")
    n, h, w = synthetic_clip(folder)
    with torch.inference_mode():
        theirs = scenario(pair[0], str(folder), h, w, n)
    return folder, (n, h, w), theirs


def compare(ours, theirs):
    assert [(t, f, ids) for t, f, ids, _ in ours] == [(t, f, ids) for t, f, ids, _ in theirs]
    worst_iou, worst_rel = 1.0, 0.0
    for (tag, f, _, a), (_, _, _, b) in zip(ours, theirs):
        a, b = a.float(), b.float()
        for i in range(a.shape[0]):
            fa, fb = a[i] > 0, b[i] > 0
            union = (fa | fb).sum().item()
            iou = (fa & fb).sum().item() / union if union else 1.0
            rel = (a[i] - b[i]).abs().max().item() / b[i].abs().max().clamp_min(1e-6).item()
            assert iou >= MIN_IOU, f"{tag} frame {f} object {i}: IoU {iou:.4f}"
            assert rel <= MAX_REL, f"{tag} frame {f} object {i}: relative error {rel:.3g}"
            worst_iou, worst_rel = min(worst_iou, iou), max(worst_rel, rel)
    return worst_iou, worst_rel


def scenario(pred, video, height, width, num_frames):
    """Clicks for two objects on frame 0, a box and a mask on later frames, forward then reverse
    propagation, a correction click, remove_object, propagation again, reset_state."""
    results = []

    def log(tag, out):
        f, ids, masks = out
        results.append((tag, f, list(ids), masks.clone()))

    state = pred.init_state(video)
    log("click", pred.add_new_points_or_box(state, 0, 1, points=[[width * 0.3, height * 0.35]], labels=[1]))
    log("clicks", pred.add_new_points_or_box(state, 0, 2, points=[[width * 0.75, height * 0.7], [width * 0.3, height * 0.3]],
                                              labels=[1, 0]))
    log("box", pred.add_new_points_or_box(state, 3, 1, box=[width * 0.1, height * 0.1, width * 0.5, height * 0.6]))
    mask = np.zeros((height, width), bool)
    mask[int(height * 0.55): int(height * 0.9), int(width * 0.55): int(width * 0.85)] = True
    log("mask", pred.add_new_mask(state, num_frames - 2, 2, mask))
    for out in pred.propagate_in_video(state):
        log("forward", out)
    for out in pred.propagate_in_video(state, start_frame_idx=num_frames - 1, reverse=True):
        log("reverse", out)
    log("correct", pred.add_new_points_or_box(state, 2, 1, points=[[width * 0.2, height * 0.2]], labels=[0],
                                               clear_old_points=False))
    ids, updated = pred.remove_object(state, 2)
    for f, masks in updated:
        results.append(("removed", f, list(ids), masks.clone()))
    for out in pred.propagate_in_video(state, start_frame_idx=1, max_frame_num_to_track=3):
        log("after remove", out)
    pred.reset_state(state)
    log("after reset", pred.add_new_points_or_box(state, 1, 5, points=[[width * 0.5, height * 0.5]], labels=[1]))
    for out in pred.propagate_in_video(state, max_frame_num_to_track=2):
        log("after reset", out)
    return results


def synthetic_clip(folder, n=6, h=96, w=128):
    rng = np.random.default_rng(0)
    for t in range(n):
        img = rng.integers(0, 50, (h, w, 3), dtype=np.uint8)
        img[15 + t: 50 + t, 20 + 2 * t: 60 + 2 * t] = (210, 60, 50)
        img[55:85, 80 - t: 115 - t] = (40, 190, 70)
        Image.fromarray(img).save(folder / f"{t:05d}.jpg", quality=95)
    return n, h, w


@pytest.mark.slow
def test_parity_synthetic_clip(pair, synthetic_reference):
    folder, (n, h, w), theirs = synthetic_reference
    mine = scenario(pair[1], str(folder), h, w, n)
    worst_iou, worst_rel = compare(mine, theirs)
    print(f"synthetic: {len(mine)} outputs, worst IoU {worst_iou:.5f}, worst relative error {worst_rel:.2e}")


@pytest.mark.slow
def test_bf16_attention_stays_within_parity(pair, synthetic_reference):
    """attention_dtype=bfloat16 (the memory cross-attention kernels in bf16, the speed option)
    against the fp32 reference: the same tolerances as fp32 parity, and not bit-identical (so the
    option really took effect)."""
    folder, (n, h, w), theirs = synthetic_reference
    ours = VideoPredictor(pair[1].model, fill_hole_area=0, attention_dtype=torch.bfloat16)
    mine = scenario(ours, str(folder), h, w, n)
    worst_iou, worst_rel = compare(mine, theirs)
    assert worst_rel > 0
    print(f"bf16 attention: {len(mine)} outputs, worst IoU {worst_iou:.5f}, worst relative error {worst_rel:.2e}")


@pytest.mark.slow
def test_parity_bedroom(pair, shared_data, tmp_path):
    source = shared_data / "sam2_examples" / "videos" / "bedroom"
    n = 5
    for name in sorted(p.name for p in source.glob("*.jpg"))[:n]:
        (tmp_path / name).write_bytes((source / name).read_bytes())
    w, h = Image.open(tmp_path / "00000.jpg").size
    ref, ours = pair
    with torch.inference_mode():
        theirs = scenario(ref, str(tmp_path), h, w, n)
    mine = scenario(ours, str(tmp_path), h, w, n)
    worst_iou, worst_rel = compare(mine, theirs)
    print(f"bedroom: {len(mine)} outputs, worst IoU {worst_iou:.5f}, worst relative error {worst_rel:.2e}")


@pytest.mark.slow
def test_parity_beyond_the_memory_window(tracking_checkpoint, tmp_path):
    """A clip longer than the kept window (pointer budget cut to 4 on both sides, so the window
    is 7 frames; 12 frames, so frames 8 to 11 and the way back run past it): segapp drops old
    outputs and still matches the reference, which keeps all."""
    n, h, w = synthetic_clip(tmp_path, n=12)
    reference.import_reference()
    from sam2.build_sam import build_sam2_video_predictor

    torch.manual_seed(0)
    ref = build_sam2_video_predictor(reference.REFERENCE_CONFIGS["sam2.1_hiera_t"], str(tracking_checkpoint),
                                     device="cpu", hydra_overrides_extra=["++model.image_size=128",
                                                                          "++model.max_obj_ptrs_in_encoder=4"])
    model = segapp.build_model("sam2.1_hiera_t", tracking_checkpoint, device="cpu", image_size=128,
                               overrides=["model.tracking.max_obj_ptrs_in_encoder=4"])
    ours = VideoPredictor(model, fill_hole_area=0)

    def run(pred):
        results = []
        state = pred.init_state(str(tmp_path))
        out = pred.add_new_points_or_box(state, 0, 1, points=[[w * 0.3, h * 0.35]], labels=[1])
        results.append(("click", out[0], list(out[1]), out[2]))
        for f, ids, masks in pred.propagate_in_video(state):
            results.append(("forward", f, list(ids), masks))
        for f, ids, masks in pred.propagate_in_video(state, start_frame_idx=n - 1, reverse=True):
            results.append(("reverse", f, list(ids), masks))
        return results, state

    with torch.inference_mode():
        theirs, _ = run(ref)
    mine, state = run(ours)
    assert state.window == 7 and len(state.objects[0].non_cond) < n - 1
    worst_iou, worst_rel = compare(mine, theirs)
    print(f"beyond window: {len(mine)} outputs, worst IoU {worst_iou:.5f}, worst relative error {worst_rel:.2e}")
