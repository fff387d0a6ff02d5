"""Sliced W2 and unbiased MMD against exact values and closed forms.

Sliced W2 here is SW2(a, b) = sqrt(E_u[W2(u.a, u.b)^2]) over uniform unit directions u. For a pure shift
b = a + delta every direction gives W2(u.a, u.b)^2 = (u.delta)^2 exactly, and E_u[(u.delta)^2] =
|delta|^2 E[cos^2 theta] = |delta|^2 / 2 in 2-D (|delta|^2 / d in d dimensions), so SW2 = |delta| / sqrt(2).
With P random directions the estimate of SW2^2 has standard error |delta|^2 sqrt(Var cos^2 theta / P),
Var cos^2 theta = 1/8 in 2-D.
"""
import math

import pytest
import torch
from flowspec.runtime.data.toy2d import sample_toy2d
from flowspec.runtime.eval.metrics import baseline, mmd_rbf, sliced_wasserstein
from flowspec.schemas.data import Moons


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def gaussian(n: int, seed: int, dim: int = 2) -> torch.Tensor:
    return torch.randn(n, dim, generator=gen(seed), dtype=torch.float64)


# ------------------------------------------------------------------------------ sliced Wasserstein
def test_sliced_wasserstein_is_zero_for_identical_sets_and_reordering():
    a = gaussian(500, 0)
    assert sliced_wasserstein(a, a) == pytest.approx(0.0, abs=1e-12)
    assert sliced_wasserstein(a, a[torch.randperm(500, generator=gen(1))]) == pytest.approx(0.0, abs=1e-12)


def test_sliced_wasserstein_is_symmetric_and_deterministic():
    a, b = gaussian(400, 0), gaussian(300, 1) + 0.5
    ab = sliced_wasserstein(a, b, generator=gen(5))
    assert ab == pytest.approx(sliced_wasserstein(b, a, generator=gen(5)), rel=1e-12)
    assert sliced_wasserstein(a, b) == sliced_wasserstein(a, b)  # no generator: a fixed default seed
    assert ab > 0


def test_sliced_wasserstein_grows_with_the_shift():
    a = gaussian(1000, 0)
    b = gaussian(1000, 1)
    values = [sliced_wasserstein(a, b + torch.tensor([s, -s / 2], dtype=torch.float64), generator=gen(2))
              for s in (0.0, 0.25, 0.5, 1.0, 2.0)]
    assert values == sorted(values) and values[-1] > 5 * values[0]


@pytest.mark.parametrize("dim", [2, 3])
def test_sliced_wasserstein_of_a_pure_shift_matches_closed_form(dim):
    a = gaussian(200, 0, dim)
    delta = torch.tensor([1.2, -1.6, 0.5][:dim], dtype=torch.float64)
    num = 4096
    sw = sliced_wasserstein(a, a + delta, num_projections=num, generator=gen(3))
    # E[cos^2] = 1/d; Var[cos^2] = 2(d-1)/(d^2(d+2)) for a uniform direction in d dimensions (1/8 in 2-D).
    expected_sq = delta.pow(2).sum().item() / dim
    se_sq = delta.pow(2).sum().item() * math.sqrt(2 * (dim - 1) / (dim**2 * (dim + 2)) / num)
    assert abs(sw**2 - expected_sq) < 4 * se_sq, (sw**2, expected_sq, se_sq)


def test_sliced_wasserstein_of_two_gaussians_with_same_covariance():
    # N(0, S) vs N(delta, S): every projection is two 1-D Gaussians of equal variance, W2^2 = (u.delta)^2,
    # so SW2^2 = |delta|^2 / 2 in 2-D; independent finite samples add only O(log n / n) to it.
    chol = torch.tensor([[1.0, 0.0], [0.6, 0.5]], dtype=torch.float64)
    delta = torch.tensor([2.0, 1.0], dtype=torch.float64)
    a = gaussian(2000, 0) @ chol.T
    b = gaussian(2000, 1) @ chol.T + delta
    num = 1024
    sw = sliced_wasserstein(a, b, num_projections=num, generator=gen(4))
    expected_sq = delta.pow(2).sum().item() / 2
    se_sq = delta.pow(2).sum().item() * math.sqrt(1 / 8 / num)  # from the random directions
    assert abs(sw**2 - expected_sq) < 4 * se_sq + 0.02, (sw**2, expected_sq, se_sq)


def test_sliced_wasserstein_unequal_sizes_is_exact_quantile_matching():
    # 1-D, where both directions are +-1: a = {0, 1}, b = {0, 0.5, 1}. Quantile functions differ by 0.5 on
    # (1/3, 2/3] (width 1/3), so W2^2 = 0.25 / 3 = 1/12.
    a = torch.tensor([[0.0], [1.0]])
    b = torch.tensor([[0.0], [0.5], [1.0]])
    assert sliced_wasserstein(a, b, num_projections=8) == pytest.approx(math.sqrt(1 / 12), rel=1e-9)
    # Repeating every point leaves the distribution unchanged: distance 0, and a shift gives the same value.
    x = gaussian(300, 0)
    doubled = x.repeat(2, 1)
    assert sliced_wasserstein(x, doubled) == pytest.approx(0.0, abs=1e-9)
    shift = torch.tensor([0.7, 0.2], dtype=torch.float64)
    assert sliced_wasserstein(x, doubled + shift, generator=gen(6)) == pytest.approx(
        sliced_wasserstein(x, x + shift, generator=gen(6)), rel=1e-9)


def test_sliced_wasserstein_rejects_mismatched_dimensions():
    with pytest.raises(ValueError):
        sliced_wasserstein(gaussian(10, 0, 2), gaussian(10, 1, 3))


# ------------------------------------------------------------------------------------------- MMD
def replicate_mmd(shift: float, reps: int, n: int, bandwidth=None) -> torch.Tensor:
    values = []
    for r in range(reps):
        a, b = gaussian(n, 2 * r), gaussian(n, 2 * r + 1)
        values.append(mmd_rbf(a, b + shift, bandwidth=bandwidth))
    return torch.tensor(values)


def test_mmd_same_distribution_is_zero_within_standard_error():
    # The unbiased estimator has expectation exactly 0 here; a biased one (diagonal kept) is ~2(1 - E k)/n high.
    values = replicate_mmd(0.0, reps=40, n=150)
    se = values.std().item() / math.sqrt(len(values))
    assert abs(values.mean().item()) < 3 * se, (values.mean().item(), se)
    assert values.min() < 0  # unbiased: single estimates straddle 0


def test_mmd_matches_closed_form_for_shifted_gaussians():
    # k(x, y) = exp(-|x-y|^2 / (2 h^2)), X ~ N(0, I), Y ~ N(delta, I) in d = 2:
    # E k(X, X') = h^2 / (h^2 + 2) = c, E k(X, Y) = c exp(-|delta|^2 / (2 (h^2 + 2))), MMD^2 = 2c (1 - exp(...)).
    h, shift = 1.0, 1.0 / math.sqrt(2)  # the shift is added to both coordinates: |delta| = 1
    c = h**2 / (h**2 + 2)
    expected = 2 * c * (1 - math.exp(-1.0 / (2 * (h**2 + 2))))
    values = replicate_mmd(shift, reps=30, n=200, bandwidth=h)
    se = values.std().item() / math.sqrt(len(values))
    assert abs(values.mean().item() - expected) < 4 * se, (values.mean().item(), expected, se)


def test_mmd_is_clearly_positive_for_different_distributions_and_symmetric():
    a, b = gaussian(500, 0), gaussian(500, 1) + 0.5
    null = replicate_mmd(0.0, reps=10, n=500).abs().max().item()
    value = mmd_rbf(a, b)
    assert value > 10 * null
    assert mmd_rbf(b, a) == pytest.approx(value, rel=1e-9)
    assert mmd_rbf(a, b + 1.0) > value


# -------------------------------------------------------------------------------------- baseline
def test_baseline_is_small_and_reproducible():
    moons = Moons(noise=0.05)

    def sampler(n, g):
        return sample_toy2d(moons, n, g)

    floor = baseline(sampler, 1000, seed=0)
    assert set(floor) == {"sliced_wasserstein", "mmd_rbf"}
    assert 0 < floor["sliced_wasserstein"] < 0.1 and abs(floor["mmd_rbf"]) < 0.01
    assert floor == baseline(sampler, 1000, seed=0)
    first, shifted = sampler(1000, gen(0)), sampler(1000, gen(1)) + 0.3
    assert sliced_wasserstein(first, shifted) > 3 * floor["sliced_wasserstein"]
    assert mmd_rbf(first, shifted) > 3 * abs(floor["mmd_rbf"])
