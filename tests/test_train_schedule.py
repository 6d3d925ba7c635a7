"""The learning-rate schedule of segapp train / pretrain / train-video, and --resume with other --epochs."""
import math

import pytest
import torch

from segapp.training.steps import follow_schedule, warmup_cosine


def scheduler(total: int, warmup: int = 2, lr: float = 1.0):
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=lr)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(warmup, total, 0.01))


def run(sched, steps: int) -> None:
    for _ in range(steps):
        sched.optimizer.step()
        sched.step()


def test_warmup_then_cosine_to_the_floor():
    f = warmup_cosine(2, 12, 0.01)
    assert [f(0), f(1)] == pytest.approx([1 / 3, 2 / 3])
    assert f(2) == pytest.approx(1.0) and f(7) == pytest.approx(0.01 + 0.99 * 0.5)
    assert f(12) == pytest.approx(0.01) and f(100) == pytest.approx(0.01)


def test_resume_with_fewer_epochs_follows_the_new_length():
    first = scheduler(total=100)
    run(first, 10)
    state = first.state_dict()
    shorter = scheduler(total=20)  # the resumed run asks for a shorter schedule
    shorter.load_state_dict(state)
    follow_schedule(shorter)
    expected = warmup_cosine(2, 20, 0.01)
    assert shorter.optimizer.param_groups[0]["lr"] == pytest.approx(expected(10))
    run(shorter, 10)
    assert shorter.optimizer.param_groups[0]["lr"] == pytest.approx(0.01)  # the floor at step 20


def test_resume_with_the_same_length_is_unchanged():
    straight = scheduler(total=30)
    run(straight, 20)
    first = scheduler(total=30)
    run(first, 8)
    resumed = scheduler(total=30)
    resumed.load_state_dict(first.state_dict())
    follow_schedule(resumed)
    assert resumed.optimizer.param_groups[0]["lr"] == first.optimizer.param_groups[0]["lr"]
    run(resumed, 12)
    assert resumed.optimizer.param_groups[0]["lr"] == straight.optimizer.param_groups[0]["lr"]
    assert not math.isclose(resumed.optimizer.param_groups[0]["lr"], 1.0)
