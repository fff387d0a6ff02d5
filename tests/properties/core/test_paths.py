"""LinearPath: x_t = (1-t) x0 + t eps, v = eps - x0 (algorithms.md section 1, invariant 1)."""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from flowspec.runtime.core import LinearPath, PathSample

from ..strategies import generator, seeds, ts

PATH = LinearPath()


def pair(seed: int, shape=(3, 2, 4, 5)):
    g = generator(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(shape, generator=g, dtype=torch.float64)


@given(seeds)
def test_endpoints_are_data_and_noise(seed):
    x0, eps = pair(seed)
    b = x0.shape[0]
    assert torch.equal(PATH.sample(x0, eps, torch.zeros(b)).x_t, x0)
    assert torch.equal(PATH.sample(x0, eps, torch.ones(b)).x_t, eps)


@given(seeds)
def test_velocity_is_noise_minus_data_and_the_time_derivative(seed):
    x0, eps = pair(seed)
    t = torch.rand(x0.shape[0], generator=generator(seed), dtype=torch.float64) * 0.9
    out = PATH.sample(x0, eps, t)
    assert isinstance(out, PathSample)
    torch.testing.assert_close(out.velocity, eps - x0, rtol=0, atol=0)
    # The path is linear in t, so a forward difference is the derivative up to rounding.
    h = 1e-3
    ahead = PATH.sample(x0, eps, t + h).x_t
    torch.testing.assert_close((ahead - out.x_t) / h, out.velocity, rtol=0, atol=1e-9)


@given(seeds, st.lists(ts, min_size=3, max_size=3))
def test_per_sample_t_broadcasts_over_trailing_dims(seed, t_values):
    x0, eps = pair(seed)
    t = torch.tensor(t_values, dtype=torch.float64)
    x_t = PATH.sample(x0, eps, t).x_t
    for b in range(3):
        expected = (1 - t_values[b]) * x0[b] + t_values[b] * eps[b]
        torch.testing.assert_close(x_t[b], expected, rtol=0, atol=1e-12)


@given(seeds)
def test_x0_and_eps_round_trip_through_the_velocity(seed):
    x0, eps = pair(seed)
    t = torch.rand(x0.shape[0], generator=generator(seed + 1), dtype=torch.float64)
    out = PATH.sample(x0, eps, t)
    torch.testing.assert_close(PATH.x0_from_velocity(out.x_t, out.velocity, t), x0, rtol=0, atol=1e-12)
    torch.testing.assert_close(PATH.eps_from_velocity(out.x_t, out.velocity, t), eps, rtol=0, atol=1e-12)


def test_mismatched_t_or_shapes_are_errors():
    x0, eps = pair(0)
    with pytest.raises(ValueError, match="shape"):
        PATH.sample(x0, eps, torch.rand(2))
    with pytest.raises(ValueError, match="shape"):
        PATH.sample(x0, eps[:, :1], torch.rand(3))
