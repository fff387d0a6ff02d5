"""Toy 2-D samplers against closed forms (moments, supports, frequencies) and batch determinism by index.

Statistical checks compare a sample mean with its expectation within Z standard errors, the standard
error estimated from the same samples; generators are seeded, so the tests are deterministic.
"""
import math
from types import SimpleNamespace

import pytest
import torch
from flowspec.runtime.data.toy2d import (
    MOONS_SCALE,
    Toy2DBatches,
    dark_squares,
    mixture_parameters,
    sample_toy2d,
)
from flowspec.schemas.data import Checkerboard, GaussianMixture, Moons, Rings, Toy2D

Z = 5.0  # standard errors allowed: a wrong constant is off by many more, chance almost never reaches it
N = 100_000


def draw(distribution, n=N, seed=0):
    return sample_toy2d(distribution, n, torch.Generator().manual_seed(seed)).double()


def assert_expectation(values: torch.Tensor, expected: float, what: str = ""):
    """The mean of per-sample values equals `expected` within Z standard errors."""
    se = values.std().item() / math.sqrt(len(values))
    mean = values.mean().item()
    assert abs(mean - expected) <= Z * se + 1e-12, f"{what}: mean {mean:.5f}, expected {expected:.5f} (se {se:.2g})"


# --------------------------------------------------------------------------------------- mixture
MIXTURE = GaussianMixture(means=[(-3.0, 0.0), (2.0, 1.0), (0.0, 4.0)], stds=[0.3, 0.6, 0.2], weights=[1.0, 2.0, 5.0])


def test_mixture_parameters_are_normalised_float64():
    means, stds, weights = mixture_parameters(MIXTURE)
    assert means.shape == (3, 2) and stds.shape == (3,) and weights.shape == (3,)
    assert {t.dtype for t in (means, stds, weights)} == {torch.float64}
    torch.testing.assert_close(weights, torch.tensor([1, 2, 5], dtype=torch.float64) / 8)
    _, _, equal = mixture_parameters(GaussianMixture(means=[(0, 0), (1, 1)], stds=[1, 1]))
    torch.testing.assert_close(equal, torch.tensor([0.5, 0.5], dtype=torch.float64))
    with pytest.raises(ValueError):
        mixture_parameters(Moons())


def test_mixture_mean_and_covariance_match_closed_form():
    means, stds, weights = mixture_parameters(MIXTURE)
    mean = (weights[:, None] * means).sum(0)
    # E[x x^T] = sum_k w_k (sigma_k^2 I + mu_k mu_k^T); the covariance follows from it and the mean.
    eye = torch.eye(2, dtype=torch.float64)
    second = sum(w * (s**2 * eye + torch.outer(m, m)) for m, s, w in zip(means, stds, weights))
    x = draw(MIXTURE)
    for i in range(2):
        assert_expectation(x[:, i], mean[i].item(), f"mean[{i}]")
        for j in range(2):
            assert_expectation(x[:, i] * x[:, j], second[i, j].item(), f"E[x{i} x{j}]")
    cov = second - torch.outer(mean, mean)
    torch.testing.assert_close(torch.cov(x.T), cov, atol=0.05, rtol=0.02)


def test_mixture_weights_and_stds_respected_per_component():
    means, stds, weights = mixture_parameters(MIXTURE)
    x = draw(MIXTURE)
    nearest = torch.cdist(x, means).argmin(1)  # components are > 10 std apart: nearest mean = the component
    for k in range(3):
        assert_expectation((nearest == k).double(), weights[k].item(), f"weight {k}")
        own = x[nearest == k] - means[k]
        assert_expectation(own.pow(2).sum(1), 2 * stds[k].item() ** 2, f"variance {k}")


# ----------------------------------------------------------------------------------- checkerboard
@pytest.mark.parametrize("squares, extent", [(4, 4.0), (3, 6.0), (5, 2.5)])
def test_checkerboard_only_on_dark_squares_and_uniform_over_them(squares, extent):
    x = draw(Checkerboard(squares=squares, extent=extent), n=40_000)
    assert x.abs().max() <= extent / 2
    side = extent / squares
    cell = ((x + extent / 2) / side).floor().long().clamp(0, squares - 1)
    assert ((cell.sum(1) % 2) == 0).all(), "a point fell on a light square"
    dark = dark_squares(squares)
    assert len(dark) == math.ceil(squares * squares / 2) and ((dark.sum(1) % 2) == 0).all()
    assert [0, 0] in dark.tolist()  # the bottom-left corner square is dark (chess convention)
    share = torch.bincount(cell[:, 0] * squares + cell[:, 1], minlength=squares * squares).double() / len(x)
    p = 1 / len(dark)  # every dark square gets an equal share: binomial standard error per square
    expected = torch.full((len(dark),), p, dtype=torch.float64)
    torch.testing.assert_close(share[dark[:, 0] * squares + dark[:, 1]], expected,
                               atol=Z * math.sqrt(p * (1 - p) / len(x)), rtol=0)
    inside = (x + extent / 2) / side - cell  # position within the square, uniform on [0, 1)^2
    for i in range(2):
        assert_expectation(inside[:, i], 0.5, "position in square")
        assert_expectation((inside[:, i] - 0.5) ** 2, 1 / 12, "spread in square")


# ------------------------------------------------------------------------------------------ rings
def test_rings_radii_and_frequencies_without_noise():
    rings = Rings(num_rings=3, radius=0.7, noise=0.0)
    x = draw(rings, n=30_000)
    r = x.norm(dim=1)
    ring = (r / 0.7).round()
    torch.testing.assert_close(r, ring * 0.7, atol=1e-5, rtol=1e-5)
    for k in (1, 2, 3):  # rings picked in proportion to circumference, k / (1 + 2 + 3)
        assert_expectation((ring == k).double(), k / 6, f"ring {k}")
    angle = torch.atan2(x[:, 1], x[:, 0])  # uniform angle: the first two harmonics vanish
    for f in (angle.cos(), angle.sin(), (2 * angle).cos()):
        assert_expectation(f, 0.0, "angle harmonic")


def test_rings_radial_noise_std():
    x = draw(Rings(num_rings=2, radius=1.0, noise=0.05), n=20_000)
    r = x.norm(dim=1)
    offset = r - r.round()
    assert_expectation(offset, 0.0, "radial offset")
    assert_expectation(offset**2, 0.05**2, "radial variance")


# ------------------------------------------------------------------------------------------ moons
def test_moons_lie_on_two_unit_half_circles_without_noise():
    x = draw(Moons(noise=0.0), n=20_000)
    c_outer = torch.tensor([-0.5, -0.25], dtype=torch.float64) * MOONS_SCALE
    d_outer, d_inner = (x - c_outer).norm(dim=1), (x + c_outer).norm(dim=1)
    on_outer = (d_outer - MOONS_SCALE).abs() < 1e-5
    on_inner = (d_inner - MOONS_SCALE).abs() < 1e-5
    assert (on_outer | on_inner).all()
    assert (x[on_outer & ~on_inner, 1] >= c_outer[1] - 1e-5).all(), "outer moon is the upper half circle"
    assert (x[on_inner & ~on_outer, 1] <= -c_outer[1] + 1e-5).all(), "inner moon is the lower half circle"
    assert_expectation(on_outer.double(), 0.5, "moon share")


@pytest.mark.parametrize("noise", [0.0, 0.1])
def test_moons_moments_and_point_symmetry(noise):
    x = draw(Moons(noise=noise), n=50_000)
    # Raw make_moons: x-variance 3/4 and y-variance 1/2 - 4/pi^2 + (2/pi - 1/4)^2 for uniform angles.
    var_x = 0.75 * MOONS_SCALE**2 + noise**2
    var_y = (0.5 - 4 / math.pi**2 + (2 / math.pi - 0.25) ** 2) * MOONS_SCALE**2 + noise**2
    assert abs(var_x - (1 + noise**2)) < 1e-12  # "roughly unit spread": unit x-variance before noise
    for values, expected, what in [(x[:, 0], 0.0, "mean x"), (x[:, 1], 0.0, "mean y"), (x[:, 0] ** 2, var_x, "var x"),
                                   (x[:, 1] ** 2, var_y, "var y"), (x[:, 0] ** 3, 0.0, "skew x"),
                                   (x[:, 1] ** 3, 0.0, "skew y"), (x[:, 0] * x[:, 1] ** 2, 0.0, "x y^2")]:
        assert_expectation(values, expected, what)
    # The two moons are mirror images through the origin: along any direction u, P(u.x <= t) = P(u.x >= -t).
    for angle in (0.0, 0.7, 1.9):
        proj = x @ torch.tensor([math.cos(angle), math.sin(angle)], dtype=torch.float64)
        for t in (-1.2, -0.6, -0.2, 0.3, 0.9):
            assert_expectation((proj <= t).double() - (proj >= -t).double(), 0.0, f"symmetry at {t}")


# --------------------------------------------------------------------------------- registry, batches
@pytest.mark.parametrize("dist", [MIXTURE, Checkerboard(), Rings(), Moons()], ids=lambda d: d.kind)
def test_shape_dtype_and_generator_determinism(dist):
    a, b = (sample_toy2d(dist, 257, torch.Generator().manual_seed(3)) for _ in range(2))
    assert a.shape == (257, 2) and a.dtype == torch.float32 and torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert not torch.equal(a, sample_toy2d(dist, 257, torch.Generator().manual_seed(4)))
    assert sample_toy2d(dist, 0, torch.Generator()).shape == (0, 2)


def test_unknown_kind_is_a_value_error():
    with pytest.raises(ValueError, match="spiral"):
        sample_toy2d(SimpleNamespace(kind="spiral"), 10, torch.Generator())


def test_batches_depend_only_on_seed_index_and_size():
    block = Toy2D(distribution={"kind": "moons"}, num_samples=1000)
    run = Toy2DBatches(block, seed=7)
    in_order = [run.batch(i, 64) for i in range(5)]
    resumed = Toy2DBatches(block, seed=7)  # a restarted run jumps straight to batch 3
    assert torch.equal(resumed.batch(3, 64), in_order[3])
    assert torch.equal(run.batch(1, 64), in_order[1])  # re-drawing after others changes nothing
    assert not torch.equal(in_order[0], in_order[1])
    assert not torch.equal(Toy2DBatches(block, seed=8).batch(3, 64), in_order[3])
    assert run.batch(2, 10).shape == (10, 2)
    assert run.batches_per_epoch(64) == 16


def test_batches_of_a_mixture_follow_its_weights():
    block = Toy2D(distribution=MIXTURE)
    _, _, weights = mixture_parameters(MIXTURE)
    x = torch.cat([Toy2DBatches(block, seed=1).batch(i, 2000) for i in range(10)]).double()
    nearest = torch.cdist(x, mixture_parameters(MIXTURE)[0]).argmin(1)
    for k in range(3):
        assert_expectation((nearest == k).double(), weights[k].item(), f"weight {k}")
