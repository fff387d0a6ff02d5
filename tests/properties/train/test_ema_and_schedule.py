"""EMA and learning-rate schedule: the formulas as configured, no hidden warm-up, exact swaps."""
import math

import pytest
import torch
from hypothesis import given, strategies as st

from flowspec.runtime.train.ema import EMA
from flowspec.runtime.train.optim import lr_factor
from flowspec.schemas.optim import Constant, Cosine, Linear


@given(st.floats(0.5, 0.99999), st.integers(1, 10_000))
def test_decay_is_the_configured_constant_unless_warmup_is_asked(decay, step):
    module = torch.nn.Linear(2, 2)
    assert EMA({"m": module}, decay).decay_at(step) == decay
    expected = min(decay, 1 - (1 + step) ** (-2 / 3))
    assert EMA({"m": module}, decay, warmup=True).decay_at(step) == pytest.approx(expected, rel=1e-12)


@given(st.floats(0.1, 0.99), st.integers(1, 4), st.integers(1, 12))
def test_update_matches_the_recurrence_and_respects_every(decay, every, steps):
    torch.manual_seed(0)
    module = torch.nn.Linear(3, 2)
    ema = EMA({"m": module}, decay, every=every)
    shadow = {k: p.detach().clone() for k, p in module.named_parameters()}
    for step in range(1, steps + 1):
        with torch.no_grad():
            for p in module.parameters():
                p.add_(torch.randn_like(p))
        ema.update(step)
        if step % every == 0:
            shadow = {k: decay * shadow[k] + (1 - decay) * p.detach() for k, p in module.named_parameters()}
    for key, value in shadow.items():
        assert torch.allclose(ema.shadow["m"][key], value, atol=1e-6)


def test_swapped_in_restores_the_training_weights_bitwise():
    module = torch.nn.Linear(4, 4)
    ema = EMA({"m": module}, 0.5)
    with torch.no_grad():
        module.weight.add_(1.0)
    before = {k: p.detach().clone() for k, p in module.named_parameters()}
    with ema.swapped_in():
        assert torch.equal(module.weight, ema.shadow["m"]["weight"])
    assert all(torch.equal(before[k], p) for k, p in module.named_parameters())


@given(st.integers(0, 50), st.integers(60, 500), st.floats(0, 1))
def test_schedules_warm_up_linearly_then_follow_their_shape(warmup, total, floor):
    for schedule in (Constant(warmup_steps=warmup), Cosine(warmup_steps=warmup, min_lr_ratio=floor),
                     Linear(warmup_steps=warmup, min_lr_ratio=floor)):
        factors = [lr_factor(schedule, step, total) for step in range(total)]
        for step in range(warmup):
            assert factors[step] == pytest.approx((step + 1) / warmup)
        after = factors[warmup:]
        assert after[0] == pytest.approx(1.0)
        if schedule.kind == "constant":
            assert all(f == 1.0 for f in after)
        else:
            assert after[-1] == pytest.approx(floor, abs=1e-9)
            assert all(a >= b - 1e-12 for a, b in zip(after, after[1:]))  # never increases
    middle = warmup + (total - warmup - 1) / 2
    if float(middle).is_integer():
        cos = lr_factor(Cosine(warmup_steps=warmup, min_lr_ratio=floor), int(middle), total)
        assert cos == pytest.approx(floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi / 2)))
