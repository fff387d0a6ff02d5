"""Closed-form Gaussian and mixture oracles (algorithms.md section 11), checked by float64 Monte Carlo."""
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from flowspec.runtime.core import (
    euler,
    gaussian_min_loss,
    gaussian_velocity,
    inference_sigmas,
    mixture_velocity,
    rectified_gaussian_velocity,
)

from ..strategies import dims, generator, grids, mus, seeds, stds, ts

# Monte-Carlo sizes: tensors stay below 32768 elements, where torch runs an op on one thread (fast,
# stable timing on a shared 2-core machine); larger samples are accumulated chunk by chunk.
N_MC, CHUNK = 120_000, 30_000


def draw_pairs(seed, n, mu, s):
    """n float64 draws of (x0, eps) with x0 ~ N(mu, s^2), one dimension."""
    g = generator(seed)
    return mu + s * torch.randn(n, generator=g, dtype=torch.float64), torch.randn(n, generator=g, dtype=torch.float64)


@given(ts, mus, stds, seeds)
def test_gaussian_velocity_is_the_monte_carlo_conditional_expectation(t, mu, s, seed):
    # E[v | x_t] is affine in x_t for Gaussian data, so a least-squares line of v on x_t estimates it
    # without bias; compare the line with the oracle at probe points, within 5 standard errors.
    x0, eps = draw_pairs(seed, CHUNK, mu, s)
    x_t, v = (1 - t) * x0 + t * eps, eps - x0
    dx, dv = x_t - x_t.mean(), v - v.mean()
    slope = (dx * dv).sum() / (dx * dx).sum()
    intercept = v.mean() - slope * x_t.mean()
    resid_var = ((dv - slope * dx) ** 2).sum() / (CHUNK - 2)
    sigma_t = math.sqrt((1 - t) ** 2 * s**2 + t**2)
    probes = (1 - t) * mu + sigma_t * torch.tensor([-1.5, 0.0, 1.5], dtype=torch.float64)
    fit = intercept + slope * probes
    se = torch.sqrt(resid_var * (1 / CHUNK + (probes - x_t.mean()) ** 2 / (dx * dx).sum()))
    oracle = gaussian_velocity(probes[:, None], t, mu, s)[:, 0]
    assert bool(((fit - oracle).abs() <= 5 * se).all()), (fit, oracle, se)


def test_the_conditional_expectation_check_detects_a_slightly_wrong_field():
    # Power of the check above: a 5% error in the gain of v* is caught.
    t, mu, s = 0.7, 0.5, 0.5
    x0, eps = draw_pairs(0, CHUNK, mu, s)
    x_t, v = (1 - t) * x0 + t * eps, eps - x0
    dx = x_t - x_t.mean()
    slope = (dx * (v - v.mean())).sum() / (dx * dx).sum()
    se = torch.sqrt(((v - v.mean() - slope * dx) ** 2).mean() / (dx * dx).sum())
    gain = (t - (1 - t) * s**2) / ((1 - t) ** 2 * s**2 + t**2)  # the slope of the true v*
    assert abs(slope - gain) <= 5 * se and abs(slope - 1.05 * gain) > 5 * se


@given(ts, mus, stds, dims, seeds)
def test_minimum_loss_is_the_loss_of_the_oracle(t, mu, s, d, seed):
    # E||v* - v||^2 per dim over chunks, against L*(t); the oracle accepts vector mu of shape (d,).
    g = generator(seed)
    mu_vec = mu * torch.linspace(-1, 1, d, dtype=torch.float64)
    n = CHUNK // d
    x0 = mu_vec + s * torch.randn(n, d, generator=g, dtype=torch.float64)
    eps = torch.randn(n, d, generator=g, dtype=torch.float64)
    x_t = (1 - t) * x0 + t * eps
    sq = ((gaussian_velocity(x_t, torch.full((n,), t, dtype=torch.float64), mu_vec, s) - (eps - x0)) ** 2).flatten()
    se = sq.std() / math.sqrt(sq.numel())
    assert abs(sq.mean().item() - gaussian_min_loss(t, s)) <= 5 * se.item()


def test_min_loss_end_points():
    assert gaussian_min_loss(0.0, 0.7) == 1.0
    assert gaussian_min_loss(1.0, 0.7) == pytest.approx(0.49, rel=1e-12)


@given(stds)
def test_uniform_t_minimum_loss_is_pi_s_over_two(s):
    # Simpson's rule on a grid fine enough for the peak of width ~s/(1+s^2) at t = s^2/(1+s^2).
    t = torch.linspace(0, 1, 20_001, dtype=torch.float64)
    f = gaussian_min_loss(t, s)
    h = 1 / 20_000
    simpson = h / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum())
    assert simpson.item() == pytest.approx(math.pi * s / 2, rel=1e-7)


def euler_std_and_mean(num_steps, mu, s):
    """Euler with the exact field is affine in the noise, so two probes give the exact std and mean."""
    sigmas = torch.linspace(1, 0, num_steps + 1, dtype=torch.float64)
    eps = torch.tensor([[-1.0], [0.0], [1.0]], dtype=torch.float64)
    x = euler(lambda x, t: gaussian_velocity(x, t, mu, s), eps, sigmas)[:, 0]
    return ((x[2] - x[0]) / 2).item(), x[1].item()


@pytest.mark.parametrize("num_steps, expected", [(10, 0.431), (40, 0.482)])
def test_euler_with_the_exact_field_underestimates_the_std(num_steps, expected):
    std, mean = euler_std_and_mean(num_steps, 0.7, 0.5)
    assert std == pytest.approx(expected, abs=5e-4)
    assert mean == pytest.approx(0.7, abs=1e-12)  # the mean is exact at any step count


def test_euler_std_converges_to_the_data_std():
    errors = [0.5 - euler_std_and_mean(n, 0.0, 0.5)[0] for n in (10, 20, 40, 80, 160)]
    assert all(e > 0 for e in errors) and errors == sorted(errors, reverse=True)
    # First order: doubling the steps roughly halves the error.
    assert all(1.6 < a / b < 2.4 for a, b in zip(errors[:-1], errors[1:]))


@given(mus, stds, dims, seeds)
def test_one_euler_step_of_the_gaussian_field_gives_the_mean(mu, s, d, seed):
    eps = torch.randn(5, d, generator=generator(seed), dtype=torch.float64)
    one_step = euler(lambda x, t: gaussian_velocity(x, t, mu, s), eps, torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(one_step, torch.full_like(eps, mu), rtol=0, atol=1e-12)


@given(mus, stds, dims, seeds, grids())
def test_the_rectified_field_is_straight_so_any_grid_is_exact(mu, s, d, seed, sigmas):
    eps = torch.randn(5, d, generator=generator(seed), dtype=torch.float64)
    field = lambda x, t: rectified_gaussian_velocity(x, t, mu, s)  # noqa: E731
    target = mu + s * eps  # the coupling of 2-RF: the monotone (optimal) map of N(0, 1) to N(mu, s^2)
    torch.testing.assert_close(euler(field, eps, torch.tensor([1.0, 0.0])), target, rtol=0, atol=1e-12)
    torch.testing.assert_close(euler(field, eps, sigmas), target, rtol=0, atol=1e-10)


def test_the_independent_coupling_field_is_not_straight():
    # Contrast for the test above: the 1-RF field needs many steps (one step collapses to the mean).
    eps = torch.randn(5, 2, generator=generator(0), dtype=torch.float64)
    field = lambda x, t: gaussian_velocity(x, t, 0.3, 0.5)  # noqa: E731
    ten = euler(field, eps, torch.linspace(1, 0, 11, dtype=torch.float64))
    assert (ten - (0.3 + 0.5 * eps)).abs().max() > 1e-2


# ----- mixtures -----------------------------------------------------------------------------------------

@st.composite
def mixtures(draw, zero_stds=False):
    k, d = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    g = generator(draw(seeds))
    means = 2 * torch.randn(k, d, generator=g, dtype=torch.float64)
    if zero_stds:
        # A finite data set with points at least 1 apart (first coordinates 1.5 apart, jitter < 0.25).
        means = 0.5 * torch.rand(k, d, generator=g, dtype=torch.float64) - 0.25
        means[:, 0] += 1.5 * torch.arange(k, dtype=torch.float64)
    stds_k = torch.zeros(k, dtype=torch.float64) if zero_stds else torch.rand(k, generator=g, dtype=torch.float64) + 0.05
    weights = torch.rand(k, generator=g, dtype=torch.float64) + 0.1
    return means, stds_k, weights


@given(mixtures(), seeds)
def test_one_euler_step_of_the_mixture_field_gives_the_data_mean(mixture, seed):
    means, stds_k, weights = mixture
    eps = torch.randn(6, means.shape[1], generator=generator(seed), dtype=torch.float64)
    field = lambda x, t: mixture_velocity(x, t, means, stds_k, weights)  # noqa: E731
    data_mean = (weights[:, None] * means).sum(0) / weights.sum()
    torch.testing.assert_close(euler(field, eps, torch.tensor([1.0, 0.0])), data_mean.expand_as(eps),
                               rtol=0, atol=1e-12)


@given(ts, mus, stds, dims, seeds)
def test_a_one_component_mixture_is_the_gaussian(t, mu, s, d, seed):
    x = torch.randn(7, d, generator=generator(seed), dtype=torch.float64)
    means = torch.full((1, d), mu, dtype=torch.float64)
    one = torch.tensor([s], dtype=torch.float64)
    torch.testing.assert_close(mixture_velocity(x, t, means, one, torch.tensor([0.4], dtype=torch.float64)),
                               gaussian_velocity(x, t, mu, s), rtol=1e-10, atol=1e-10)
    # Splitting that component in two identical halves changes nothing.
    torch.testing.assert_close(mixture_velocity(x, t, means.repeat(2, 1), one.repeat(2), one.new_tensor([0.3, 0.3])),
                               gaussian_velocity(x, t, mu, s), rtol=1e-10, atol=1e-10)


@given(mixtures(zero_stds=True), seeds)
def test_the_finite_data_field_memorises_a_training_point(mixture, seed):
    means, stds_k, weights = mixture
    eps = torch.randn(6, means.shape[1], generator=generator(seed), dtype=torch.float64)
    field = lambda x, t: mixture_velocity(x, t, means, stds_k, weights)  # noqa: E731
    # Geometric steps near 0: the last Euler step lands on sum_k w_k mu_k with w at the last t = 1e-3,
    # where the softmax is one-hot for points 1 apart.
    sigmas = torch.cat([torch.linspace(1, 0.1, 10, dtype=torch.float64),
                        torch.logspace(-1.3, -3, 6, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)])
    x = euler(field, eps, sigmas)
    nearest = torch.cdist(x, means).min(dim=1).values
    assert bool((nearest < 1e-6).all()), nearest


@pytest.mark.parametrize("t", [0.15, 0.5, 0.85])
def test_mixture_velocity_is_the_monte_carlo_conditional_expectation(t):
    # E[v | x_t] is characterised by E[(v - v*(x_t)) h(x_t)] = 0 for every test function h; check it
    # for a handful of non-linear h, each within 5 standard errors of zero.
    means = torch.tensor([[-1.5, 0.5], [1.0, 1.0], [0.5, -2.0]], dtype=torch.float64)
    stds_k, weights = torch.tensor([0.3, 0.6, 0.2], dtype=torch.float64), torch.tensor([0.5, 0.3, 0.2],
                                                                                       dtype=torch.float64)
    g = generator(2024)
    m = CHUNK // 12  # 6 test functions x 2 dims per sample
    sums, sq_sums, n = 0.0, 0.0, 0
    for _ in range(N_MC // m):
        k = torch.multinomial(weights, m, replacement=True, generator=g)
        x0 = means[k] + stds_k[k, None] * torch.randn(m, 2, generator=g, dtype=torch.float64)
        eps = torch.randn(m, 2, generator=g, dtype=torch.float64)
        x_t = (1 - t) * x0 + t * eps
        resid = (eps - x0) - mixture_velocity(x_t, t, means, stds_k, weights)  # (m, 2)
        h = torch.stack([torch.ones(m, dtype=torch.float64), x_t[:, 0], x_t[:, 1], torch.tanh(x_t[:, 0] - x_t[:, 1]),
                         torch.exp(-(x_t**2).sum(1)), torch.sin(2 * x_t[:, 1])], dim=1)  # (m, 6)
        prod = (resid[:, :, None] * h[:, None, :]).reshape(m, -1)
        sums, sq_sums, n = sums + prod.sum(0), sq_sums + (prod**2).sum(0), n + m
    mean = sums / n
    se = torch.sqrt((sq_sums / n - mean**2) / n)
    assert bool((mean.abs() <= 5 * se).all()), (mean / se)


def test_the_mixture_check_detects_a_wrong_field():
    # Power of the check above: the single-Gaussian field with the mixture's overall mean is wrong.
    t = 0.5
    means = torch.tensor([[-1.5], [1.5]], dtype=torch.float64)
    g = generator(3)
    k = torch.randint(0, 2, (CHUNK,), generator=g)
    x0 = means[k] + 0.3 * torch.randn(CHUNK, 1, generator=g, dtype=torch.float64)
    eps = torch.randn(CHUNK, 1, generator=g, dtype=torch.float64)
    x_t = (1 - t) * x0 + t * eps
    wrong = gaussian_velocity(x_t, t, 0.0, 0.3)
    prod = ((eps - x0) - wrong)[:, 0] * x_t[:, 0]
    assert prod.mean().abs() > 5 * prod.std() / math.sqrt(CHUNK)


@pytest.mark.parametrize("alpha", [1.0, 3.0])
def test_inference_grids_drive_the_oracle_to_the_data_distribution(alpha):
    # On the diffusers grids too, Euler's std bias with the exact field shrinks as steps are added.
    eps = torch.tensor([[-1.0], [1.0]], dtype=torch.float64)
    errors = []
    for n in (10, 50, 200, 800):
        x = euler(lambda x, t: gaussian_velocity(x, t, 0.0, 0.5), eps, inference_sigmas(n, alpha))
        errors.append(0.5 - ((x[1] - x[0]) / 2).item())
    assert all(e > 0 for e in errors) and errors == sorted(errors, reverse=True)
    assert errors[-1] < 2.5e-3
