"""No host stalls per frame: hole filling on the device (the same holes as OpenCV finds), and
frames decoded and resized in a worker thread, ahead of tracking."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from segapp.postprocess import small_components, small_components_torch
from segapp.video.prefetch import Prefetcher
from segapp.video.predictor import VideoPredictor
from segapp.video.tracker import HOLE_FILL_LOGIT, fill_holes
from tiny_models import tiny_model


def test_small_components_on_the_device_equal_opencv():
    rng = np.random.default_rng(0)
    for trial in range(20):
        h, w = rng.integers(4, 60, 2)
        binary = rng.random((3, h, w)) < rng.uniform(0.2, 0.8)
        for max_area in (1, 2, 5, 8, 30):
            expected = np.stack([small_components(b, max_area) for b in binary])
            got = small_components_torch(torch.from_numpy(binary), max_area).numpy()
            np.testing.assert_array_equal(got, expected, err_msg=f"trial {trial}, max_area {max_area}")
    # a long thin component of exactly max_area pixels (the slowest to label) is small; one more pixel is not
    line = torch.zeros(1, 5, 20, dtype=torch.bool)
    line[0, 2, 3:11] = True
    assert small_components_torch(line, 8)[0, 2, 3:11].all()
    assert not small_components_torch(line, 7).any()


def test_fill_holes_on_the_device_equals_the_cpu_path():
    m = torch.full((2, 1, 12, 12), -5.0)
    m[:, 0, 2:10, 2:10] = 5.0
    m[0, 0, 5, 5] = -3.0  # a one-pixel hole
    m[0, 0, 4:7, 7:9] = -3.0  # a six-pixel hole, above the limit of 4
    plain = fill_holes(m, 4, on_device=False)
    fast = fill_holes(m, 4, on_device=True)
    assert torch.equal(plain, fast)
    assert fast[0, 0, 5, 5] == HOLE_FILL_LOGIT and (fast[0, 0, 4:7, 7:9] == -3.0).all()
    assert torch.equal(fast[1], m[1])  # no hole: unchanged
    rng = torch.Generator().manual_seed(0)
    noisy = torch.randn(4, 1, 32, 32, generator=rng)
    assert torch.equal(fill_holes(noisy, 8, on_device=False), fill_holes(noisy, 8, on_device=True))


def test_prefetcher_prepares_ahead_in_a_worker_and_raises_there_errors():
    calls = []

    def load(i):
        calls.append((i, threading.current_thread().name))
        if i == 7:
            raise ValueError("frame 7 is unreadable")
        return i * 10

    with Prefetcher(load, order=[0, 1, 2, 3, 7], depth=2) as prefetch:
        assert prefetch.take(0) == 0  # not prefetched: computed here, then 1 and 2 scheduled
        assert prefetch.take(2) == 20  # 1 is dropped, never taken
        assert prefetch.take(3) == 30
        with pytest.raises(ValueError, match="frame 7"):
            prefetch.take(7)
        assert prefetch.take(99) == 990  # outside the order: computed here
    workers = {i for i, name in calls if name.startswith("segapp-prefetch")}
    assert {1, 2, 3, 7} <= workers and 0 not in workers


def test_propagation_resizes_frames_in_the_worker(monkeypatch):
    predictor = VideoPredictor(tiny_model())
    threads = []
    original = VideoPredictor.prepare_frame

    def recording(self, frame):
        threads.append(threading.current_thread().name)
        return original(self, frame)

    monkeypatch.setattr(VideoPredictor, "prepare_frame", recording)
    frames = [np.full((24, 32, 3), 40 * t, np.uint8) for t in range(5)]
    state = predictor.init_state(frames)
    predictor.add_new_points_or_box(state, 0, 1, points=[[8, 8]], labels=[1])
    threads.clear()
    out = [f for f, _, _ in predictor.propagate_in_video(state)]
    assert out == [0, 1, 2, 3, 4]
    # frame 1 is needed at once (made in the tracking thread); 2, 3, 4 were made ahead
    assert sum(name.startswith("segapp-prefetch") for name in threads) >= 3
