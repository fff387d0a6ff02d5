"""Timestep samplers, their densities, loss weights, spec dispatch (algorithms.md section 2)."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given

from flowspec.runtime.core import (
    CosMap,
    FixedShift,
    LogitNormal,
    Mode,
    NoShift,
    ResolutionShift,
    TimestepDistribution,
    TimestepSample,
    Uniform,
    loss_weight,
    sampler_from_spec,
    shift,
)
from flowspec.runtime.core.timesteps import SAMPLER_KINDS
from flowspec.schemas import timesteps as spec

from ..strategies import (
    generator,
    ks_critical,
    ks_two_sample,
    logit_means,
    logit_stds,
    mode_scales,
    mode_scales_full,
    seeds,
    union_kinds,
)

# Sizes stay below 32768 elements: torch then runs each op on one thread, which keeps these tests fast
# and their timing stable on a shared 2-core machine.
N_KS = 20_000
# Quadrature in z = logit(t): every density here lives on (0, 1) and may pile up at either end, where
# a uniform t grid would miss mass; dt = t (1 - t) dz.
Z = torch.linspace(-30.0, 30.0, 30_001, dtype=torch.float64)
T_Z = torch.sigmoid(Z)
JAC_Z = T_Z * torch.sigmoid(-Z)

SAMPLERS = [Uniform(), LogitNormal(), LogitNormal(0.7, 0.5), LogitNormal(-1.0, 1.8), Mode(), Mode(-0.8),
            Mode(0.0), CosMap()]


def integrate(sampler) -> float:
    return torch.trapezoid(sampler.density(T_Z) * JAC_Z, Z).item()


def cdf_at(sampler, t: torch.Tensor) -> np.ndarray:
    """F(t) by cumulative quadrature of the closed-form density on the logit grid."""
    pdf = (sampler.density(T_Z) * JAC_Z).numpy()
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (pdf[1:] + pdf[:-1]) * np.diff(Z.numpy()))])
    return np.interp(torch.logit(t.double()).numpy(), Z.numpy(), cdf)


def ks_one_sample(samples: torch.Tensor, sampler) -> float:
    """sup |F_n - F| for the sorted samples against the CDF implied by `sampler.density`."""
    t = samples.double().sort().values
    f = cdf_at(sampler, t)
    n = t.numel()
    return float(max(np.max(np.arange(1, n + 1) / n - f), np.max(f - np.arange(n) / n)))


# ----- support, shape, dtype -------------------------------------------------------------------------

@pytest.mark.parametrize("sampler", SAMPLERS + [LogitNormal(0.0, 40.0), LogitNormal(8.0, 3.0)], ids=repr)
def test_samples_are_float32_strictly_inside_the_unit_interval(sampler):
    # s = 40 makes the float32 sigmoid hit exactly 0 and 1 often: only the clamp keeps t inside.
    t = sampler.sample(30_000, generator(0))
    assert t.shape == (30_000,) and t.dtype == torch.float32
    assert bool(((t > 0) & (t < 1)).all())


@pytest.mark.parametrize("sampler", SAMPLERS, ids=repr)
def test_same_generator_seed_gives_the_same_draws(sampler):
    assert torch.equal(sampler.sample(64, generator(3)), sampler.sample(64, generator(3)))
    assert not torch.equal(sampler.sample(64, generator(3)), sampler.sample(64, generator(4)))


# ----- densities ---------------------------------------------------------------------------------------

def test_closed_form_density_values():
    half = torch.tensor([0.5], dtype=torch.float64)
    assert LogitNormal(0.0, 1.0).density(half).item() == pytest.approx(1.596, abs=5e-4)
    assert Mode(1.29).density(half).item() == pytest.approx(3.793, abs=5e-4)
    assert CosMap().density(half).item() == pytest.approx(4 / math.pi, rel=1e-12)
    assert Uniform().density(half).item() == 1.0


@given(mode_scales)
def test_mode_density_at_one_half(s):
    assert Mode(s).density(torch.tensor([0.5], dtype=torch.float64)).item() == pytest.approx(
        1 / (1 - s * (math.pi / 2 - 1)), rel=1e-9)


def test_mode_with_zero_scale_is_uniform():
    u = torch.linspace(0, 1, 101, dtype=torch.float64)
    torch.testing.assert_close(Mode(0.0).warp(u), 1 - u)
    torch.testing.assert_close(Mode(0.0).density(u[1:-1]), torch.ones(99, dtype=torch.float64))


@given(logit_means, logit_stds)
def test_logit_normal_density_integrates_to_one(m, s):
    assert integrate(LogitNormal(m, s)) == pytest.approx(1.0, abs=1e-6)


@given(mode_scales)
def test_mode_density_integrates_to_one(s):
    assert integrate(Mode(s)) == pytest.approx(1.0, abs=1e-5)


def test_uniform_and_cosmap_densities_integrate_to_one():
    assert integrate(Uniform()) == pytest.approx(1.0, abs=1e-6)
    assert integrate(CosMap()) == pytest.approx(1.0, abs=1e-6)


def test_densities_vanish_outside_the_unit_interval():
    outside = torch.tensor([-0.5, 0.0, 1.0, 1.5], dtype=torch.float64)
    for sampler in SAMPLERS:
        assert torch.equal(sampler.density(outside), torch.zeros(4, dtype=torch.float64)), sampler


# ----- symmetry and median -----------------------------------------------------------------------------

@given(logit_stds, mode_scales)
def test_centred_densities_are_symmetric_about_one_half(s, scale):
    t = torch.linspace(0.001, 0.999, 999, dtype=torch.float64)
    for sampler in (LogitNormal(0.0, s), Mode(scale), CosMap()):
        torch.testing.assert_close(sampler.density(t), sampler.density(1 - t), rtol=1e-7, atol=0)


@given(mode_scales_full)
def test_mode_map_is_point_symmetric(s):
    u = torch.linspace(0, 1, 257, dtype=torch.float64)
    mode = Mode(s)
    torch.testing.assert_close(mode.warp(1 - u), 1 - mode.warp(u), rtol=0, atol=1e-12)
    assert mode.warp(torch.tensor(0.0)).item() == 1.0 and abs(mode.warp(torch.tensor(1.0)).item()) < 1e-15
    assert bool((mode.warp(u).diff() <= 1e-15).all())  # decreasing over the whole valid range


@given(logit_stds, mode_scales, seeds)
def test_centred_samplers_have_median_one_half(s, scale, seed):
    n = 20_001
    for sampler in (LogitNormal(0.0, s), Mode(scale)):
        median = sampler.sample(n, generator(seed)).median().item()
        # Standard error of a sample median: 1 / (2 pi(0.5) sqrt(n)).
        se = 1 / (2 * sampler.density(torch.tensor([0.5])).item() * math.sqrt(n))
        assert abs(median - 0.5) < 4.5 * se, (sampler, median, se)


# ----- samples follow the density ----------------------------------------------------------------------

@pytest.mark.parametrize("sampler", SAMPLERS, ids=repr)
def test_samples_match_the_density(sampler):
    d = ks_one_sample(sampler.sample(N_KS, generator(1234)), sampler)
    assert d < ks_critical(N_KS), d


def test_the_ks_check_detects_a_slightly_wrong_density():
    d = ks_one_sample(LogitNormal(0.0, 1.0).sample(N_KS, generator(1234)), LogitNormal(0.0, 1.2))
    assert d > ks_critical(N_KS)


@pytest.mark.parametrize("scheme, ours", [
    ("logit_normal", LogitNormal(0.0, 1.0)),
    ("logit_normal", LogitNormal(0.5, 0.7)),
    ("mode", Mode(1.29)),
    ("mode", Mode(-0.6)),
    ("none", Uniform()),
], ids=repr)
def test_same_distribution_as_diffusers_density_sampling(scheme, ours):
    from diffusers.training_utils import compute_density_for_timestep_sampling

    kwargs = {"logit_mean": getattr(ours, "m", None), "logit_std": getattr(ours, "s", None),
              "mode_scale": getattr(ours, "scale", None)}
    theirs = compute_density_for_timestep_sampling(scheme, N_KS, generator=generator(11), **kwargs)
    mine = ours.sample(N_KS, generator(22))
    assert ks_two_sample(mine, theirs) < ks_critical(N_KS, N_KS)


# ----- loss weights --------------------------------------------------------------------------------------

def test_loss_weights_follow_their_formulas():
    t = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)
    assert torch.equal(loss_weight("none", t), torch.ones_like(t))
    torch.testing.assert_close(loss_weight("sigma_sqrt", t), 1 / (t * t), rtol=1e-12, atol=0)
    # The cosmap weight is the cosmap density (SD3: weighting by pi equals sampling from pi).
    torch.testing.assert_close(loss_weight("cosmap", t), CosMap().density(t), rtol=1e-12, atol=0)


@pytest.mark.parametrize("kind", ["none", "sigma_sqrt", "cosmap"])
def test_loss_weights_match_diffusers(kind):
    from diffusers.training_utils import compute_loss_weighting_for_sd3

    t = torch.rand(257, generator=generator(5)) * 0.98 + 0.01
    torch.testing.assert_close(loss_weight(kind, t), compute_loss_weighting_for_sd3(kind, t), rtol=1e-6, atol=0)


@pytest.mark.parametrize("kind", ["logit_normal", "mode", "None", ""])
def test_unknown_loss_weighting_is_an_error_not_ones(kind):
    # diffusers silently returns ones for these; a typo must not train with the wrong weighting.
    with pytest.raises(ValueError, match="loss weighting"):
        loss_weight(kind, torch.rand(4))
    with pytest.raises(ValueError, match="loss weighting"):
        TimestepDistribution(Uniform(), NoShift(), kind)


# ----- spec dispatch --------------------------------------------------------------------------------------

def test_sampler_registry_covers_exactly_the_schema_union():
    assert sorted(SAMPLER_KINDS) == sorted(union_kinds(spec.Sampler))


def test_sampler_from_spec_builds_the_matching_sampler():
    assert sampler_from_spec(spec.Uniform()) == Uniform()
    assert sampler_from_spec(spec.LogitNormal(m=0.3, s=0.7)) == LogitNormal(0.3, 0.7)
    assert sampler_from_spec(spec.Mode(scale=0.9)) == Mode(0.9)
    assert sampler_from_spec(spec.CosMap()) == CosMap()
    assert sampler_from_spec(spec.Timesteps().sampler) == LogitNormal(0.0, 1.0)


def test_unknown_sampler_kind_is_an_error():
    with pytest.raises(ValueError, match="logit_normal"):  # the message lists the valid kinds
        sampler_from_spec(SimpleNamespace(kind="beta"))


def test_invalid_sampler_parameters_are_errors():
    with pytest.raises(ValueError):
        LogitNormal(0.0, 0.0)
    with pytest.raises(ValueError):
        Mode(1.8)
    with pytest.raises(ValueError):
        Mode(-1.1)


# ----- sampler + shift + weight ---------------------------------------------------------------------------

@given(seeds)
def test_draw_shifts_the_sampled_t_and_weights_the_shifted_t(seed):
    dist = TimestepDistribution(Mode(1.0), ResolutionShift(256), "sigma_sqrt")
    out = dist.draw(512, generator(seed), 512, 1024, 2048)
    assert isinstance(out, TimestepSample) and out.t.shape == out.weight.shape == (512,)
    expected = shift(Mode(1.0).sample(512, generator(seed)), math.sqrt(512 * 1024) / 256)
    torch.testing.assert_close(out.t, expected, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(out.weight, out.t**-2, rtol=1e-6, atol=0)
    assert bool(((out.t > 0) & (out.t < 1)).all())


@pytest.mark.parametrize("m, s, alpha", [(0.0, 1.0, 3.0), (0.5, 0.7, 0.4), (-1.0, 1.5, 1.9)])
def test_shifted_logit_normal_is_logit_normal_with_shifted_mean(m, s, alpha):
    # Shift property (v), end to end through the distribution: shift(LN(m, s); a) ~ LN(m + log a, s).
    t = TimestepDistribution(LogitNormal(m, s), FixedShift(alpha)).draw(N_KS, generator(7), None, None, None).t
    assert ks_one_sample(t, LogitNormal(m + math.log(alpha), s)) < ks_critical(N_KS)


def test_from_spec_reads_sampler_shift_and_weighting():
    block = spec.Timesteps(sampler={"kind": "mode", "scale": 1.0}, shift={"kind": "fixed", "alpha": 2.0},
                           loss_weighting="cosmap")
    dist = TimestepDistribution.from_spec(block)
    assert dist.sampler == Mode(1.0) and dist.shift.alpha() == 2.0 and dist.loss_weighting == "cosmap"
    out = dist.draw(100, generator(0), None, None, None)
    torch.testing.assert_close(out.weight, loss_weight("cosmap", out.t))


def test_resolution_shift_without_a_resolution_is_an_error():
    dist = TimestepDistribution(Uniform(), ResolutionShift(256))
    with pytest.raises(ValueError, match="height"):
        dist.draw(4, None, None, None, None)
