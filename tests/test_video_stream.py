"""Frame-by-frame tracking (StreamTracker) on the tiny model: the offline predictor's masks,
constant memory over a long stream, errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import segapp
from segapp.video.frames import VideoReadError
from segapp.video.stream import StreamFrames, StreamTracker
from test_video_predictor import H, W, make_frames, predictor  # noqa: F401 (the tiny model that tracks)

PROMPTS = {1: {"points": [[15, 20]], "labels": [1]}, "car": {"box": [30, 5, 60, 40]}}


def test_stream_masks_equal_the_offline_predictor(predictor):
    # 20 frames: at least max_obj_ptrs_in_encoder (16), so the offline video and the stream
    # (of unknown length) scale object-pointer positions alike.
    frames = make_frames(20)
    state = predictor.init_state(frames)
    for obj_id, prompt in PROMPTS.items():
        predictor.add_new_points_or_box(state, 0, obj_id, **prompt)
    offline = [(f, ids, m) for f, ids, m in predictor.propagate_in_video(state)]

    tracker = segapp.StreamTracker(predictor)
    streamed = [tracker.start(frames[0], PROMPTS)]
    for k, frame in enumerate(frames[1:]):
        prepared = tracker.prepare(frame) if k % 2 else None  # resized elsewhere, or in step
        streamed.append(tracker.step(frame, prepared))
    assert [(f, ids) for f, ids, _ in streamed] == [(f, ids) for f, ids, _ in offline]
    for (_, _, a), (_, _, b) in zip(streamed, offline):
        assert a.shape == (2, 1, H, W)
        assert torch.equal(a, b)
    tracker.close()


def session_bytes(state) -> int:
    total = 0
    for obj in state.objects:
        for store in (obj.cond, obj.non_cond, obj.pending_cond, obj.pending_non_cond):
            for out in store.values():
                for t in (out.pred_masks, out.obj_ptr, out.object_score_logits, out.maskmem_features):
                    if t is not None:
                        total += t.numel() * t.element_size()
    for feats in state._features.values():
        total += sum(t.numel() * t.element_size() for t in (feats.top, feats.top_pos, *feats.high_res))
    return total


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def test_memory_stays_flat_over_300_frames(predictor):
    frames = make_frames(40, h=24, w=32)
    tracker = StreamTracker(predictor)
    tracker.start(frames[0], {1: {"points": [[8, 10]], "labels": [1]}})
    window = tracker.session.window
    outputs, nbytes, tracked, rss = [], [], [], []
    for t in range(1, 300):
        tracker.step(frames[t % len(frames)])
        state = tracker.session
        outputs.append(state.stored_outputs())
        nbytes.append(session_bytes(state))
        tracked.append(sum(len(o.tracked) for o in state.objects))
        rss.append(rss_mb())
        assert len(state.frames._frames) <= state.frames.keep
    settled = 2 * window + 2  # the window has filled behind the stream
    assert max(outputs[settled:]) == min(outputs[settled:]) == outputs[-1]
    assert max(nbytes[settled:]) == min(nbytes[settled:])
    assert max(tracked[settled:]) == tracked[-1] <= window + 1
    assert outputs[-1] <= 2 * window + 2 < 300  # a store keeping everything would hold 300
    # The process's resident memory: no growth beyond allocator noise between frames 100 and 300.
    assert rss[-1] - rss[99] < 20, f"RSS grew from {rss[99]:.1f} MB to {rss[-1]:.1f} MB"
    tracker.close()


def test_objects_added_and_removed_mid_stream(predictor):
    frames = make_frames(6)
    tracker = StreamTracker(predictor)
    f, ids, masks = tracker.start(frames[0])
    assert (f, ids, masks.shape) == (0, [], (0, 1, H, W))
    f, ids, masks = tracker.step(frames[1])
    assert (f, ids, masks.shape) == (1, [], (0, 1, H, W))
    mask = np.zeros((H, W), bool)
    mask[10:30, 5:25] = True
    f, ids, masks = tracker.add_object(7, mask=mask)
    assert (f, ids) == (1, [7]) and ((masks[0, 0] > 0) == torch.from_numpy(mask)).float().mean() > 0.97
    f, ids, masks = tracker.step(frames[2])
    assert (f, ids, masks.shape) == (2, [7], (1, 1, H, W))
    tracker.add_object(8, points=[[40, 30]], labels=[1])
    assert tracker.step(frames[3])[1] == [7, 8]
    tracker.remove_object(7)
    f, ids, masks = tracker.step(frames[4])
    assert (f, ids, masks.shape) == (4, [8], (1, 1, H, W))
    with pytest.raises(KeyError, match="unknown object id 7"):
        tracker.remove_object(7)


def test_stream_errors(predictor):
    tracker = StreamTracker(predictor)
    with pytest.raises(RuntimeError, match="call start"):
        tracker.step(make_frames(1)[0])
    tracker.start(make_frames(1)[0], PROMPTS)
    with pytest.raises(VideoReadError, match="one size"):
        tracker.step(make_frames(1, h=H + 2)[0])
    with pytest.raises(ValueError, match="a mask, or points"):
        tracker.add_object(3, mask=np.ones((H, W), bool), box=[0, 0, 5, 5])
    source = StreamFrames(make_frames(1)[0], keep=2)
    for frame in make_frames(3):
        source.push(frame)
    assert source.received == 4 and source.get(3) is not None
    with pytest.raises(IndexError, match="no longer held"):
        source.get(1)
    with pytest.raises(IndexError, match="not been received"):
        source.get(4)
