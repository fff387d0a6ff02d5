"""The timestep shift, its algebra (algorithms.md section 2, properties (i)-(vi)) and the inference grid."""
import math
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given

from flowspec.runtime.core import (
    DynamicShift,
    FixedShift,
    LogitNormal,
    NoShift,
    ResolutionShift,
    inference_sigmas,
    shift,
    shift_from_spec,
)
from flowspec.runtime.core.shifts import SHIFT_KINDS
from flowspec.schemas import timesteps as spec

from ..strategies import alphas, flux_mus, logit_means, logit_stds, num_steps, parity_alphas, ts, union_kinds

T = torch.linspace(1e-3, 1 - 1e-3, 999, dtype=torch.float64)


def logit(t):
    return torch.log(t) - torch.log1p(-t)


# ----- shift(t; alpha) -----------------------------------------------------------------------------------

def test_shift_of_one_half_by_three():  # (vi)
    assert shift(0.5, 3.0) == 0.75
    assert shift(torch.tensor(0.5), 3.0).item() == 0.75


@given(alphas)
def test_fixed_points_zero_and_one(alpha):  # (i)
    assert shift(0.0, alpha) == 0.0 and shift(1.0, alpha) == 1.0


@given(alphas)
def test_strictly_increasing(alpha):  # (ii)
    assert bool((shift(T, alpha).diff() > 0).all())


@given(ts, alphas)
def test_moves_towards_noise_iff_alpha_at_least_one(t, alpha):  # (iii)
    assert (shift(t, alpha) >= t) == (alpha >= 1) or math.isclose(shift(t, alpha), t, rel_tol=1e-12)


@given(alphas, alphas)
def test_composition_and_inverse(a, b):  # (iv)
    torch.testing.assert_close(shift(shift(T, a), b), shift(T, a * b), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(shift(shift(T, a), 1 / a), T, rtol=1e-12, atol=1e-14)


@given(alphas)
def test_logit_moves_by_log_alpha(alpha):
    torch.testing.assert_close(logit(shift(T, alpha)), logit(T) + math.log(alpha), rtol=1e-9, atol=1e-9)


@given(logit_means, logit_stds, alphas)
def test_logit_normal_stays_logit_normal_with_shifted_mean(m, s, alpha):  # (v), by change of variables
    # p_shifted(shift(t)) * shift'(t) = p(t), with shift'(t) = alpha / (1 + (alpha - 1) t)^2.
    jacobian = alpha / (1 + (alpha - 1) * T) ** 2
    moved = LogitNormal(m + math.log(alpha), s).density(shift(T, alpha)) * jacobian
    torch.testing.assert_close(moved, LogitNormal(m, s).density(T), rtol=1e-8, atol=1e-12)


# ----- Shift variants -----------------------------------------------------------------------------------

def test_no_shift_and_fixed_shift():
    t = torch.rand(16, dtype=torch.float64)
    assert NoShift().alpha() == 1.0 and torch.equal(NoShift()(t), t)
    assert FixedShift(3.0).alpha(64, 64, 16) == 3.0
    torch.testing.assert_close(FixedShift(3.0)(t), shift(t, 3.0))


def test_resolution_shift_uses_the_sqrt_pixel_ratio():
    res = ResolutionShift(256)
    assert res.alpha(256, 256) == 1.0
    assert res.alpha(1024, 1024) == 4.0  # the formula's 4, not SD3's hand-picked 3 (algorithms.md)
    assert res.alpha(512, 2048) == pytest.approx(4.0)
    assert res.alpha(384, 640) == pytest.approx(math.sqrt(384 * 640) / 256)
    with pytest.raises(ValueError, match="height"):
        res.alpha(None, 256)


def test_flux_mu_end_points_and_midpoint():
    flux = DynamicShift()
    assert flux.mu(256) == 0.5 and flux.mu(4096) == 1.15  # exactly, as algorithms.md requires
    assert flux.mu(1024) == pytest.approx(0.63, abs=1e-12)
    assert flux.alpha(seq_len=4096) == pytest.approx(math.exp(1.15))
    with pytest.raises(ValueError, match="seq_len"):
        flux.alpha(1024, 1024, None)


@given(flux_mus)
def test_dynamic_shift_is_flux_time_shift(mu):
    from diffusers import FlowMatchEulerDiscreteScheduler

    # A DynamicShift whose line gives mu at L = 256 tokens.
    flux = DynamicShift(base_shift=mu, max_shift=mu + 1.0)
    theirs = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True).time_shift(mu, 1.0, T)
    torch.testing.assert_close(flux(T, seq_len=256), theirs, rtol=1e-12, atol=1e-14)


def test_shift_registry_covers_exactly_the_schema_union():
    assert sorted(SHIFT_KINDS) == sorted(union_kinds(spec.Shift))


def test_shift_from_spec_builds_the_matching_shift():
    assert isinstance(shift_from_spec(spec.NoShift()), NoShift)
    assert shift_from_spec(spec.FixedShift(alpha=2.5)).alpha() == 2.5
    assert shift_from_spec(spec.ResolutionShift(base_resolution=512)).alpha(1024, 1024) == 2.0
    flux = shift_from_spec(spec.DynamicShift(base_shift=0.2, max_shift=0.9, base_seq_len=64, max_seq_len=1024))
    assert flux.mu(64) == 0.2 and flux.mu(1024) == 0.9
    with pytest.raises(ValueError, match="fixed"):  # the message lists the valid kinds
        shift_from_spec(SimpleNamespace(kind="karras"))


# ----- inference grid ----------------------------------------------------------------------------------

@given(num_steps, alphas)
def test_static_grid_runs_from_one_to_zero(n, alpha):
    sigmas = inference_sigmas(n, alpha)
    assert sigmas.shape == (n + 1,) and sigmas.dtype == torch.float32
    assert sigmas[0].item() == 1.0 and sigmas[-1].item() == 0.0
    assert bool((sigmas.diff() < 0).all())
    assert sigmas.double().diff().sum().item() == pytest.approx(-1.0, abs=1e-12)


@given(num_steps, flux_mus)
def test_dynamic_grid_runs_from_one_to_zero(n, mu):
    sigmas = inference_sigmas(n, mu=mu)
    assert sigmas.shape == (n + 1,) and sigmas[0].item() == 1.0 and sigmas[-1].item() == 0.0
    assert bool((sigmas.diff() < 0).all())


def test_static_grid_shifts_sigma_min_twice():
    # diffusers' pitfall: the last non-zero sigma is shift(shift(1/1000; 3); 3) ~ 0.00893, not 1/N.
    sigmas = inference_sigmas(4, 3.0)
    assert sigmas[-2].item() == pytest.approx(shift(shift(1e-3, 3.0), 3.0), rel=1e-6)
    torch.testing.assert_close(sigmas, torch.tensor([1.0, 0.858, 0.602, 0.0089, 0.0]), rtol=0, atol=5e-4)


def diffusers_sigmas(n, alpha=1.0, mu=None):
    from diffusers import FlowMatchEulerDiscreteScheduler

    if mu is None:
        scheduler = FlowMatchEulerDiscreteScheduler(shift=alpha)
        scheduler.set_timesteps(n)
    else:
        scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)
        scheduler.set_timesteps(n, mu=mu)
    torch.testing.assert_close(scheduler.timesteps, 1000 * scheduler.sigmas[:-1])
    return scheduler.sigmas


@pytest.mark.parametrize("n", [1, 2, 4, 10, 28, 50, 100, 1000])
@pytest.mark.parametrize("alpha", [0.25, 0.5, 1.0, 1.5, 3.0, 6.0])
def test_static_grid_matches_diffusers(n, alpha):
    torch.testing.assert_close(inference_sigmas(n, alpha), diffusers_sigmas(n, alpha), rtol=0, atol=1e-6)


@pytest.mark.parametrize("n", [1, 4, 28, 50])
@pytest.mark.parametrize("mu", [-0.5, 0.5, 0.63, 1.15, 2.5])
def test_dynamic_grid_matches_diffusers(n, mu):
    torch.testing.assert_close(inference_sigmas(n, mu=mu), diffusers_sigmas(n, mu=mu), rtol=0, atol=1e-6)


@given(num_steps, parity_alphas, flux_mus)
def test_any_grid_matches_diffusers(n, alpha, mu):
    torch.testing.assert_close(inference_sigmas(n, alpha), diffusers_sigmas(n, alpha), rtol=0, atol=1e-6)
    torch.testing.assert_close(inference_sigmas(n, mu=mu), diffusers_sigmas(n, mu=mu), rtol=0, atol=1e-6)


def test_each_shift_picks_its_diffusers_grid():
    flux = DynamicShift()
    torch.testing.assert_close(flux.inference_sigmas(28, seq_len=4096), diffusers_sigmas(28, mu=1.15),
                               rtol=0, atol=1e-6)
    torch.testing.assert_close(ResolutionShift(256).inference_sigmas(28, 768, 768), diffusers_sigmas(28, 3.0),
                               rtol=0, atol=1e-6)
    torch.testing.assert_close(NoShift().inference_sigmas(10), diffusers_sigmas(10), rtol=0, atol=1e-6)


def test_bad_grid_requests_are_errors():
    with pytest.raises(ValueError):
        inference_sigmas(0)
    with pytest.raises(ValueError, match="not both"):
        inference_sigmas(10, alpha=3.0, mu=1.0)
    with pytest.raises(ValueError):
        inference_sigmas(10, alpha=-1.0)
