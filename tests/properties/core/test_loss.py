"""Flow-matching loss reductions and condition dropout (algorithms.md section 1)."""
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from flowspec.runtime.core import condition_dropout_mask, flow_matching_loss, per_sample_loss

from ..strategies import floats, generator, seeds

shapes = st.sampled_from([(4, 3), (2, 4, 8, 8), (5, 1, 7), (3, 16, 2, 3, 3)])


def draw_pair(seed, shape):
    g = generator(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(shape, generator=g, dtype=torch.float64)


@given(seeds, shapes)
def test_zero_exactly_when_prediction_equals_target(seed, shape):
    v_pred, v_target = draw_pair(seed, shape)
    assert flow_matching_loss(v_target.clone(), v_target).item() == 0.0
    # Any single differing element makes it positive.
    nudged = v_target.clone()
    nudged.view(-1)[seed % nudged.numel()] += 1e-3
    assert flow_matching_loss(nudged, v_target).item() > 0.0
    assert flow_matching_loss(v_pred, v_target).item() > 0.0


@given(seeds, shapes)
def test_per_sample_loss_is_the_mean_over_non_batch_dims(seed, shape):
    v_pred, v_target = draw_pair(seed, shape)
    l_b = per_sample_loss(v_pred, v_target)
    assert l_b.shape == (shape[0],)
    for b in range(shape[0]):
        expected = sum(float(d) ** 2 for d in (v_pred[b] - v_target[b]).flatten()) / math.prod(shape[1:])
        assert l_b[b].item() == pytest.approx(expected, rel=1e-12)
    assert flow_matching_loss(v_pred, v_target).item() == pytest.approx(l_b.mean().item(), rel=1e-12)


@given(shapes, floats(-3.0, 3.0))
def test_a_constant_error_gives_its_square_whatever_the_shape(shape, delta):
    # A mean (not a sum) over dims: the value must not grow with the latent size.
    target = torch.zeros(shape, dtype=torch.float64)
    assert flow_matching_loss(target + delta, target).item() == pytest.approx(delta**2, rel=1e-12, abs=1e-300)


@given(seeds, shapes, floats(0.0, 10.0))
def test_weights_scale_each_sample(seed, shape, c):
    v_pred, v_target = draw_pair(seed, shape)
    b = shape[0]
    plain = flow_matching_loss(v_pred, v_target)
    assert flow_matching_loss(v_pred, v_target, torch.full((b,), c, dtype=torch.float64)).item() == pytest.approx(
        c * plain.item(), rel=1e-12, abs=1e-300)
    w = torch.rand(b, generator=generator(seed), dtype=torch.float64)
    weighted = flow_matching_loss(v_pred, v_target, w)
    assert weighted.item() == pytest.approx((w * per_sample_loss(v_pred, v_target)).mean().item(), rel=1e-12)


def test_one_hot_weight_picks_one_sample():
    v_pred, v_target = draw_pair(0, (4, 3, 5))
    w = torch.tensor([0.0, 0.0, 4.0, 0.0])
    assert flow_matching_loss(v_pred, v_target, w).item() == pytest.approx(
        per_sample_loss(v_pred, v_target)[2].item(), rel=1e-12)


def test_low_precision_inputs_reduce_in_float32_and_keep_gradients():
    v_pred = torch.randn(2, 4, 8, 8, generator=generator(1)).bfloat16().requires_grad_()
    v_target = torch.randn(2, 4, 8, 8, generator=generator(2)).bfloat16()
    loss = flow_matching_loss(v_pred, v_target)
    assert loss.dtype == torch.float32 and loss.ndim == 0
    loss.backward()
    assert v_pred.grad is not None and v_pred.grad.abs().sum() > 0


def test_shape_mismatches_are_errors():
    a, b = draw_pair(0, (4, 3))
    with pytest.raises(ValueError, match="shape"):
        flow_matching_loss(a, b[:, :2])
    with pytest.raises(ValueError, match="weight"):
        flow_matching_loss(a, b, torch.ones(3))


# ----- condition dropout ---------------------------------------------------------------------------------

@given(floats(0.0, 1.0), seeds)
def test_dropout_rate_is_p(p, seed):
    n = 20_000
    mask = condition_dropout_mask(n, p, generator(seed))
    assert mask.dtype == torch.bool and mask.shape == (n,)
    se = math.sqrt(p * (1 - p) / n)
    # Plus 5 counts: for tiny p the count is Poisson, where one drop can lie 7 normal se out (p = 1e-6: a
    # chance of 2%); 6 drops at n p = 0.02 have a chance of 1e-13. At p = 0.5 the slack is 1.6% of the bound.
    assert abs(mask.double().mean().item() - p) <= 4.5 * se + 5 / n


def test_dropout_extremes_and_determinism():
    assert not condition_dropout_mask(1000, 0.0, generator(0)).any()
    assert condition_dropout_mask(1000, 1.0, generator(0)).all()
    assert torch.equal(condition_dropout_mask(64, 0.3, generator(9)), condition_dropout_mask(64, 0.3, generator(9)))
    with pytest.raises(ValueError):
        condition_dropout_mask(8, 1.5)
