"""Flow-GRPO's tensor code (algorithms.md section 6, invariants 1-6): noise level 0 is the Euler step; the
SDE with the exact field of Gaussian data keeps the ODE's marginals; the step log-probability is the
Gaussian's (closed form, and a Monte-Carlo check of its mean); group advantages are centred, scaled and
invariant to affine changes of the reward; the clipped objective is the policy gradient at ratio 1, the
unclipped one inside the clip range and flat outside it on the side A asks to grow; KL >= 0, 0 at equality."""
import math

import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from flowspec.runtime.core import gaussian_velocity, inference_sigmas
from flowspec.runtime.core.grpo import (clipped_objective, group_advantages, sde_sigma, sde_step_mean, sde_step_std,
                                        step_kl, step_log_prob)

from ..strategies import floats, generator, mus, seeds, stds, ts


@given(seeds, ts, floats(0.0, 1.0))
def test_noise_level_zero_is_the_euler_step(seed, t, fraction):
    g = generator(seed)
    x, v = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    t_next = t * fraction
    sigma = sde_sigma(t, 0.9, 0.0)
    assert sigma == 0.0 and sde_step_std(t, t_next, sigma) == 0.0
    assert torch.equal(sde_step_mean(x, v, t, t_next, sigma), x + (t_next - t) * v)


@settings(max_examples=8, deadline=None)
@given(mus, stds, floats(0.3, 1.0), seeds)
def test_the_sde_with_the_exact_field_keeps_the_data_marginal(mu, s, a, seed):
    g = generator(seed)
    x = torch.randn(20000, 1, generator=g, dtype=torch.float64)
    sigmas = inference_sigmas(200).double().tolist()
    for i in range(200):
        t, t_next = sigmas[i], sigmas[i + 1]
        sigma = sde_sigma(t, sigmas[1], a)
        mean = sde_step_mean(x, gaussian_velocity(x, max(t, 1e-6), mu, s), t, t_next, sigma)
        x = mean + sde_step_std(t, t_next, sigma) * torch.randn(x.shape, generator=g, dtype=torch.float64)
    assert abs(x.mean().item() - mu) < 0.03 * max(s, 1.0) + 4 * s / math.sqrt(20000)
    assert abs(x.std().item() / s - 1) < 0.03


@given(seeds, floats(0.01, 3.0))
def test_the_step_log_probability_is_the_gaussians_averaged_over_dimensions(seed, std):
    g = generator(seed)
    mean, x = torch.randn(5, 2, 3, generator=g), torch.randn(5, 2, 3, generator=g)
    expected = torch.distributions.Normal(mean, std).log_prob(x).reshape(5, -1).mean(dim=1)
    assert torch.allclose(step_log_prob(x, mean, std), expected, atol=1e-5)
    draws = mean + std * torch.randn(4000, 5, 2, 3, generator=g)  # E log p = -1/2 - log std - log sqrt(2 pi)
    monte_carlo = torch.stack([step_log_prob(d, mean, std) for d in draws[:400]]).mean().item()
    assert abs(monte_carlo - (-0.5 - math.log(std) - 0.5 * math.log(2 * math.pi))) < 0.05
    assert bool((step_log_prob(mean, mean, std) >= step_log_prob(x, mean, std)).all())  # the argmax is the mean


group_sizes = st.integers(2, 6)


@given(seeds, group_sizes, st.integers(1, 5), st.booleans(), floats(0.1, 10.0), floats(-5.0, 5.0))
def test_group_advantages_are_centred_scaled_and_affine_invariant(seed, size, groups, global_std, scale, shift):
    rewards = torch.randn(size * groups, generator=generator(seed), dtype=torch.float64)
    a = group_advantages(rewards, size, global_std, clip=1e9)
    assert torch.allclose(a.view(groups, size).mean(dim=1), torch.zeros(groups, dtype=torch.float64), atol=1e-9)
    moved = group_advantages(scale * rewards + shift, size, global_std, clip=1e9)
    std = (rewards.std(unbiased=False) if global_std else rewards.view(groups, size).std(dim=1, unbiased=False)).min()
    assume(std * min(scale, 1.0) > 1e-2)  # the 1e-4 floor changes a by at most 1e-4 / std, here 1%
    assert torch.allclose(moved, a, atol=1.5e-2 * a.abs().max().item() + 1e-6)
    if not global_std:
        assert torch.allclose(a.view(groups, size).std(dim=1, unbiased=False), torch.ones(groups, dtype=torch.float64),
                              atol=1e-2)
    assert group_advantages(rewards, size, global_std, clip=0.5).abs().max() <= 0.5
    assert torch.equal(group_advantages(torch.full((size,), 3.0), size, global_std, clip=5.0), torch.zeros(size))


@given(seeds, floats(1e-5, 0.5))
def test_at_ratio_one_the_clipped_objective_is_the_policy_gradient(seed, eps):
    g = generator(seed)
    log_prob = torch.randn(8, generator=g, dtype=torch.float64).requires_grad_(True)
    advantages = torch.randn(8, generator=g, dtype=torch.float64)
    loss, ratio = clipped_objective(log_prob, log_prob.detach(), advantages, eps)
    assert torch.equal(ratio, torch.ones(8, dtype=torch.float64)) and loss.item() == -advantages.mean().item()
    loss.backward()
    assert torch.allclose(log_prob.grad, -advantages / 8)


@given(seeds, floats(1e-3, 0.5), floats(-1.0, 1.0))
def test_the_clip_is_inert_inside_its_range_and_flat_outside_where_a_asks_to_grow(seed, eps, where):
    g = generator(seed)
    old = torch.randn(6, generator=g, dtype=torch.float64)
    advantages = torch.randn(6, generator=g, dtype=torch.float64)
    inside = (old + math.log1p(where * eps * 0.99)).requires_grad_(True)  # 1 - eps < r < 1 + eps
    loss, _ = clipped_objective(inside, old, advantages, eps)
    assert torch.allclose(loss, (-advantages * torch.exp(inside - old)).mean())
    # past the clip on the side the advantage pushes towards: no gradient
    past = torch.where(advantages > 0, torch.tensor(1 + 2 * eps), torch.tensor(1 - 1.5 * eps)).double()
    beyond = (old + torch.log(past)).requires_grad_(True)
    assume(bool((advantages.abs() > 1e-6).all()))
    clipped, _ = clipped_objective(beyond, old, advantages, eps)
    clipped.backward()
    assert torch.equal(beyond.grad, torch.zeros(6, dtype=torch.float64))


@given(seeds, ts, floats(0.0, 1.0), floats(0.05, 2.0))
def test_step_kl_is_positive_zero_at_equality_and_exact_is_per_dim_over_dt(seed, t, fraction, sigma):
    g = generator(seed)
    mean, ref = torch.randn(4, 2, 3, generator=g), torch.randn(4, 2, 3, generator=g)
    t_next = t * fraction
    assume(t - t_next > 1e-4)
    per_dim = step_kl(mean, ref, t, t_next, sigma, "per_dim")
    assert bool((per_dim >= 0).all()) and torch.equal(step_kl(mean, mean, t, t_next, sigma, "per_dim"), torch.zeros(4))
    assert torch.allclose(step_kl(mean, ref, t, t_next, sigma, "exact"), per_dim / (t - t_next), rtol=1e-5)
    # the exact form is the two step Gaussians' KL per dimension
    std = sde_step_std(t, t_next, sigma)
    full = torch.distributions.kl_divergence(torch.distributions.Normal(mean, std), torch.distributions.Normal(ref, std))
    assert torch.allclose(step_kl(mean, ref, t, t_next, sigma, "exact"), full.reshape(4, -1).mean(dim=1), rtol=1e-4)
