"""Flow-GRPO's tensor code (algorithms.md section 6), in flowspec's convention (t = noise level, dt < 0).

The reverse SDE with the ODE's marginals, one step from t to t' = t + dt:

    sigma_t = a sqrt(t / (1 - t))          (at t = 1 the denominator is 1 - t_1, the grid's second point)
    mu      = x + [ v + sigma_t^2 / (2 t) (x + (1 - t) v) ] dt
    x'      = mu + sigma_t sqrt(-dt) z

Its log-probability is the Gaussian's, averaged (not summed) over the non-batch dimensions, so that the
ratio exp(logp - logp_old) is a per-dimension quantity (hence the tiny clip range). Advantages are
group-relative; the objective is PPO's clipped one; the KL to the reference is per step.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

STD_FLOOR = 1e-4  # numpy's population std plus this, as the reference code


def sde_sigma(t: float, t_second: float, noise_level: float) -> float:
    """sigma_t = a sqrt(t / (1 - t)); at t = 1, 1 - t_second instead of 0 (t_second: the grid's second point)."""
    return noise_level * math.sqrt(t / (1 - (t_second if t >= 1 else t)))


def sde_step_mean(x: Tensor, v: Tensor, t: float, t_next: float, sigma: float) -> Tensor:
    """mu of the step: the Euler step plus the score correction that keeps the ODE's marginals."""
    dt = t_next - t
    return x + (v + sigma ** 2 / (2 * t) * (x + (1 - t) * v)) * dt


def sde_step_std(t: float, t_next: float, sigma: float) -> float:
    return sigma * math.sqrt(t - t_next)


def step_log_prob(x_next: Tensor, mean: Tensor, std: float) -> Tensor:
    """log N(x_next; mean, std^2), averaged over the non-batch dimensions: shape (B,)."""
    z = (x_next.float() - mean.float()) / std
    per_dim = -0.5 * z ** 2 - math.log(std) - 0.5 * math.log(2 * math.pi)
    return per_dim.reshape(per_dim.shape[0], -1).mean(dim=1)


def group_advantages(rewards: Tensor, group_size: int, global_std: bool, clip: float) -> Tensor:
    """A_i = (R_i - mean of its group) / (std + 1e-4), std over the group or (global_std) over all of
    `rewards` (population std), clipped to +-clip. Groups are consecutive runs of group_size items."""
    if rewards.dim() != 1 or len(rewards) % group_size:
        raise ValueError(f"{tuple(rewards.shape)} rewards do not form whole groups of {group_size}")
    groups = rewards.double().view(-1, group_size)
    centred = groups - groups.mean(dim=1, keepdim=True)
    std = rewards.double().std(unbiased=False) if global_std else groups.std(dim=1, unbiased=False, keepdim=True)
    return (centred / (std + STD_FLOOR)).clamp(-clip, clip).flatten().to(rewards.dtype)


def clipped_objective(log_prob: Tensor, old_log_prob: Tensor, advantages: Tensor, clip_range: float) -> tuple[Tensor, Tensor]:
    """PPO's loss mean(max(-A r, -A clip(r, 1 - eps, 1 + eps))) with r = exp(logp - logp_old), and the
    ratios themselves."""
    ratio = torch.exp(log_prob - old_log_prob)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip_range, 1 + clip_range)
    return torch.maximum(unclipped, clipped).mean(), ratio


def step_kl(mean: Tensor, ref_mean: Tensor, t: float, t_next: float, sigma: float, form: str) -> Tensor:
    """KL of the policy's step Gaussian to the reference's, per item (B,), averaged over dimensions:
    per_dim: (mu - mu_ref)^2 / (2 sigma_t^2), the reference code's (no |dt|);
    exact:   (mu - mu_ref)^2 / (2 sigma_t^2 |dt|), the two Gaussians' KL per dimension."""
    squared = (mean.float() - ref_mean.float()) ** 2
    variance = sigma ** 2 * ((t - t_next) if form == "exact" else 1.0)
    per_item = squared.reshape(squared.shape[0], -1).mean(dim=1)
    return per_item / (2 * variance)
