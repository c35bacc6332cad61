"""Warm-up schedules, exactly: the rate at the end of the warm-up and halfway through the decay.

Tested through the public ``training.make_scheduler``; the exact values follow from the definitions
(linear warm-up from lr/W to lr over W steps, then cosine from lr to 0 over the remaining steps).
"""

import math

import pytest
import torch
from torch import nn

from resnet_tutorial.training import make_scheduler


def rates(schedule, epochs, steps_per_epoch, **kwargs):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.4)
    sched = make_scheduler(opt, schedule, epochs, steps_per_epoch, **kwargs)
    out = []
    for _ in range(epochs * steps_per_epoch):
        out.append(opt.param_groups[0]["lr"] / 0.4)
        opt.step()
        sched.step()
    return out


def check_warmup_then_cosine(lrs, warmup):
    decay = len(lrs) - warmup
    assert lrs[0] == pytest.approx(1 / warmup)  # starts low, not at zero
    assert lrs[warmup // 2 - 1] == pytest.approx(0.5)  # linear: half way up at half the warm-up
    assert lrs[warmup - 1] == pytest.approx(1.0)  # the end of the warm-up reaches the base rate ...
    assert lrs[warmup] == pytest.approx(1.0)  # ... and the decay starts from it
    assert max(lrs) == pytest.approx(1.0)
    assert lrs[warmup + decay // 2] == pytest.approx(0.5, abs=1e-9)  # cosine: half way down at half the decay
    assert lrs[warmup + decay // 4] == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)), abs=1e-9)
    assert all(a >= b for a, b in zip(lrs[warmup:], lrs[warmup + 1:], strict=False))


def test_cosine_with_warmup():
    check_warmup_then_cosine(rates("cosine", epochs=10, steps_per_epoch=10, warmup_epochs=2), warmup=20)


def test_warmup_cosine_warms_up_for_a_quarter():
    # "warmup_cosine" (once called "onecycle") warms up over the first quarter of the steps
    lrs = rates("warmup_cosine", epochs=8, steps_per_epoch=10)  # 80 steps, warm-up over the first quarter: 20 steps
    check_warmup_then_cosine(lrs, warmup=20)
    assert lrs[65] == pytest.approx(0.5 * (1 + math.cos(math.pi * 45 / 60)), abs=1e-6)


def test_step_with_warmup():
    lrs = rates("step", epochs=8, steps_per_epoch=10, milestones=[4, 6], warmup_epochs=1)
    assert lrs[4] == pytest.approx(0.5) and lrs[9] == pytest.approx(1.0)  # end of warm-up: the base rate
    assert lrs[10:40] == pytest.approx([1.0] * 30)
    assert lrs[40] == pytest.approx(0.1) and lrs[60] == pytest.approx(0.01)


def test_constant_with_warmup():
    lrs = rates("constant", epochs=8, steps_per_epoch=10, warmup_epochs=0.5)
    assert lrs[:6] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0])


def test_warmup_cosine_takes_the_warmup_it_is_given():
    # an explicit warm-up replaces the default quarter: 1 epoch of 10 steps here, not 22 steps
    check_warmup_then_cosine(rates("warmup_cosine", epochs=9, steps_per_epoch=10, warmup_epochs=1), warmup=10)


def test_a_warmup_of_two_steps():
    # the shortest warm-up: half the rate at the first step, the whole rate from the second
    assert rates("constant", epochs=4, steps_per_epoch=2, warmup_epochs=1) == pytest.approx([0.5] + [1.0] * 7)


def test_a_warmup_longer_than_the_run_spans_it():
    # asked for 3 epochs of warm-up in a run of 2: the rate rises over the whole run and reaches lr at its end
    lrs = rates("constant", epochs=2, steps_per_epoch=5, warmup_epochs=3)
    assert lrs == pytest.approx([k / 9 for k in range(1, 10)] + [1.0])


def test_step_at_the_milestones_given_by_gamma():
    lrs = rates("step", epochs=8, steps_per_epoch=10, milestones=[2, 5], gamma=0.5)
    assert lrs == pytest.approx([1.0] * 20 + [0.5] * 30 + [0.25] * 30)
