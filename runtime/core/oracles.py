"""Closed-form velocity fields for Gaussian and Gaussian-mixture data (algorithms.md section 11).

Data x0 ~ N(mu, s^2 I), eps ~ N(0, I), x_t = (1-t) x0 + t eps, so x_t ~ N((1-t) mu, sigma_t^2 I) with
sigma_t^2 = (1-t)^2 s^2 + t^2. These are exact targets for tests and toy evaluation; they follow the
dtype of x, so pass float64 tensors for tight comparisons.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .paths import expand_t


def _as(value: Tensor | float, x: Tensor) -> Tensor:
    return torch.as_tensor(value, dtype=x.dtype, device=x.device)


def gaussian_velocity(x: Tensor, t: Tensor | float, mu: Tensor | float, s: Tensor | float) -> Tensor:
    """v*(x, t) = E[eps - x0 | x_t = x] = -mu + (t - (1-t) s^2) / sigma_t^2 * (x - (1-t) mu).

    x: (B, ...), t: scalar or (B,), mu broadcastable to x, s a scalar.
    """
    t, mu, s = expand_t(t, x), _as(mu, x), _as(s, x)
    var_t = (1 - t) ** 2 * s**2 + t**2
    return -mu + (t - (1 - t) * s**2) / var_t * (x - (1 - t) * mu)


def gaussian_min_loss(t: Tensor | float, s: Tensor | float) -> Tensor | float:
    """L*(t) = E||v* - (eps - x0)||^2 per dim = s^2 / ((1-t)^2 s^2 + t^2); its mean over t ~ U(0,1) is pi s / 2."""
    return s**2 / ((1 - t) ** 2 * s**2 + t**2)


def rectified_gaussian_velocity(x: Tensor, t: Tensor | float, mu: Tensor | float, s: Tensor | float) -> Tensor:
    """The 2-rectified field v2(x, t) = -mu + (1-s)(x - (1-t) mu) / ((1-t) s + t).

    It is the velocity of the straight paths of the coupling x0 = mu + s eps (the optimal transport map),
    so one Euler step from t = 1 is exact: eps - v2(eps, 1) = mu + s eps.
    """
    t, mu, s = expand_t(t, x), _as(mu, x), _as(s, x)
    return -mu + (1 - s) * (x - (1 - t) * mu) / ((1 - t) * s + t)


def mixture_velocity(x: Tensor, t: Tensor | float, means: Tensor, stds: Tensor, weights: Tensor) -> Tensor:
    """v*(x, t) = sum_k w_k(x, t) v*_k(x, t) for data sum_k pi_k N(mu_k, s_k^2 I).

    w_k = softmax_k[ log pi_k + log N(x; (1-t) mu_k, sigma_k(t)^2 I) ], v*_k the Gaussian field of
    component k. x: (B, d), t: scalar or (B,), means (K, d), stds (K,), weights (K,) (need not sum to 1).
    With all s_k = 0 this is the exact field of a finite data set, sum_k w_k (x - mu_k) / t.
    """
    if x.ndim != 2:
        raise ValueError(f"mixture_velocity expects x of shape (B, d), got {tuple(x.shape)}")
    means, stds, weights = _as(means, x), _as(stds, x), _as(weights, x)
    d = x.shape[1]
    t = expand_t(t, x)  # scalar or (B, 1)
    t_bk = t.reshape(-1, 1, 1) if t.ndim else t
    var = (1 - t) ** 2 * stds**2 + t**2  # (B or 1, K)
    centre = x[:, None, :] - (1 - t_bk) * means[None]  # (B, K, d)
    log_w = (torch.log(weights) - 0.5 * d * torch.log(2 * math.pi * var)
             - 0.5 * (centre**2).sum(-1) / var)  # (B, K)
    # softmax written out: torch's CPU softmax wakes its thread pool even for a (B, K) tensor, which
    # costs milliseconds per call on a busy machine; this form is the same numbers.
    w = torch.exp(log_w - torch.logsumexp(log_w, dim=-1, keepdim=True))
    gain = (t - (1 - t) * stds**2) / var  # (B or 1, K)
    v_k = -means[None] + gain[..., None] * centre  # (B, K, d)
    return (w[..., None] * v_k).sum(dim=1)
