"""A distilled student's sampling (runtime/core/shifts.py nested_sigmas, solvers.py consistency) and the
Frechet distance of the distillation report (runtime/eval/metrics.py)."""
import torch
from hypothesis import given
from hypothesis import strategies as st

from flowspec.runtime.core import euler
from flowspec.runtime.core.shifts import nested_sigmas, shift
from flowspec.runtime.core.solvers import consistency
from flowspec.runtime.eval.metrics import frechet_distance
from flowspec.runtime.objectives.progressive_distill import round_starts

from ..strategies import dims, seeds

alphas = st.floats(0.2, 6.0)


@given(st.integers(0, 5), st.integers(1, 4), alphas)
def test_the_nested_grid_of_n_steps_is_every_kth_point_of_the_grid_of_k_n(log_n, k, alpha):
    n = 2 ** log_n
    fine, coarse = nested_sigmas(n * k, alpha), nested_sigmas(n, alpha)
    assert coarse[0] == 1 and coarse[-1] == 0 and bool((coarse[1:] < coarse[:-1]).all())
    assert torch.equal(fine[::k], coarse)
    assert torch.allclose(coarse.double(), shift(torch.linspace(1, 0, n + 1, dtype=torch.float64), alpha), atol=1e-6)


@given(seeds, dims)
def test_one_consistency_step_is_one_euler_step(seed, d):
    g = torch.Generator().manual_seed(seed)
    x, a = torch.randn(4, d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
    field = lambda x, t: x - a + t[:, None]  # noqa: E731 - any field
    grid = torch.tensor([1.0, 0.0], dtype=torch.float64)
    assert torch.allclose(consistency(field, x, grid, lambda i, shape: torch.zeros(shape)), euler(field, x, grid))


@given(seeds, dims, st.integers(1, 6))
def test_consistency_sampling_of_a_point_mass_returns_the_point_whatever_the_renoising(seed, d, steps):
    """The exact field of data at one point a is (x - a) / t: every clean estimate is a."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, generator=g, dtype=torch.float64)
    x = torch.randn(5, d, generator=g, dtype=torch.float64)
    out = consistency(lambda x, t: (x - a) / t[:, None], x, nested_sigmas(steps).double(),
                      lambda i, shape: torch.randn(shape, generator=g, dtype=torch.float64))
    assert torch.allclose(out, a.expand_as(out), atol=1e-9)


@given(seeds, st.integers(2, 6))
def test_the_frechet_distance_is_zero_to_itself_and_the_squared_shift_of_a_translate(seed, d):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(200, d, generator=g, dtype=torch.float64)
    c = torch.randn(d, generator=g, dtype=torch.float64)
    assert abs(frechet_distance(a, a)) < 1e-6
    assert abs(frechet_distance(a, a + c) - float(c.pow(2).sum())) < 1e-6 * (1 + float(c.pow(2).sum()))
    b = torch.randn(200, d, generator=g, dtype=torch.float64) * 2
    assert abs(frechet_distance(a, b) - frechet_distance(b, a)) < 1e-6


@given(st.integers(1, 500), st.integers(1, 8))
def test_rounds_split_the_steps_evenly(steps, rounds):
    starts = round_starts(steps, rounds)
    assert starts[0] == 0 and all(b >= a for a, b in zip(starts, starts[1:]))
    lengths = [b - a for a, b in zip(starts, starts[1:] + [steps])]
    assert max(lengths) - min(lengths) <= 1 and sum(lengths) == steps
