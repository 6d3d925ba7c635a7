"""propagate_both_ways: the same frames and masks as two propagate_in_video calls by hand."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from segapp.video.propagation import PropagationStep, propagate_both_ways, walk_length
from test_video_predictor import make_frames as frames_of, predictor  # noqa: F401 (the tiny model that tracks)

N = 6


def make_frames(n: int = N) -> list[np.ndarray]:
    return frames_of(n)


def prompted(predictor, frames, start):
    state = predictor.init_state(frames)
    predictor.add_new_points_or_box(state, start, 1, points=[[20, 20]], labels=[1])
    predictor.add_new_points_or_box(state, start, 2, box=[30, 5, 60, 40])
    return state


def by_hand(predictor, frames, start, order):
    state = prompted(predictor, frames, start)
    out = []
    for direction in order:
        for f, ids, logits in predictor.propagate_in_video(state, start_frame_idx=start,
                                                           reverse=direction == "backward"):
            out.append((f, list(ids), logits.clone(), direction))
    return out


def assert_same(steps, expected):
    assert [(s.frame_idx, list(s.obj_ids), s.direction) for s in steps] == [(f, i, d) for f, i, _, d in expected]
    for s, (_, _, logits, _) in zip(steps, expected):
        torch.testing.assert_close(s.logits, logits, rtol=0, atol=0)


@pytest.mark.parametrize("order", [("backward", "forward"), ("forward", "backward")])
def test_both_ways_equals_two_walks_by_hand(predictor, order):
    frames = make_frames()
    expected = by_hand(predictor, frames, 2, order)
    steps = list(propagate_both_ways(predictor, prompted(predictor, frames, 2), 2, directions=order))
    assert all(isinstance(s, PropagationStep) for s in steps)
    assert_same(steps, expected)
    # the start frame comes once per walk; every frame is covered
    assert [s.frame_idx for s in steps].count(2) == 2 and {s.frame_idx for s in steps} == set(range(N))
    assert len(steps) == walk_length(N, 2, order) == N + 1
    f, ids, logits, direction = steps[0]  # unpacks as a tuple
    assert (f, direction) == (2, order[0]) and steps[0].reverse == (order[0] == "backward")


def test_one_direction_and_start_at_frame_zero(predictor):
    frames = make_frames()
    expected = by_hand(predictor, frames, 0, ("forward",))
    steps = list(propagate_both_ways(predictor, prompted(predictor, frames, 0), 0, directions=["forward"]))
    assert_same(steps, expected)
    both = list(propagate_both_ways(predictor, prompted(predictor, frames, 0), 0, directions=("backward", "forward")))
    assert [s.frame_idx for s in both] == list(range(N)) == [s.frame_idx for s in steps]  # nothing backward from 0
    assert walk_length(N, 0, ("backward", "forward")) == walk_length(N, 0, ["forward"]) == N


class CountingLock:
    def __init__(self):
        self.lock = threading.Lock()
        self.entered = 0

    def __enter__(self):
        self.lock.acquire()
        self.entered += 1

    def __exit__(self, *exc):
        self.lock.release()


def test_lock_is_taken_per_frame_and_released_before_each_step(predictor):
    frames = make_frames()
    lock = CountingLock()
    steps = []
    for step in propagate_both_ways(predictor, prompted(predictor, frames, 3), 3, lock=lock):
        assert not lock.lock.locked()  # the consumer runs without the lock
        steps.append(step)
    assert_same(steps, by_hand(predictor, frames, 3, ("forward", "backward")))
    assert lock.entered == len(steps) + 2  # one per frame, plus the call that ends each walk


def test_should_stop_ends_the_walk(predictor):
    frames = make_frames()
    seen = []
    state = prompted(predictor, frames, 1)
    for step in propagate_both_ways(predictor, state, 1, should_stop=lambda: len(seen) >= 3):
        seen.append(step.frame_idx)
    assert seen == [1, 2, 3]  # forward from 1; stopped before frame 4 and the backward walk


def test_bad_directions_are_refused(predictor):
    state = prompted(predictor, make_frames(2), 0)
    for bad in ([], ["up"], ["forward", "forward"]):
        with pytest.raises(ValueError, match="directions must be"):
            list(propagate_both_ways(predictor, state, 0, directions=bad))
