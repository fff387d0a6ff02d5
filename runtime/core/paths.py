"""Probability paths: how a data point x0 and a noise draw eps are mixed at noise level t.

flowspec convention (algorithms.md section 0): t is the noise level, t=0 is data, t=1 is noise,
x_t = (1-t) x0 + t eps, and the target velocity is v = d x_t / dt = eps - x0.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def expand_t(t: Tensor | float, x: Tensor) -> Tensor:
    """t as a tensor that broadcasts over x: a scalar stays a scalar, shape (B,) becomes (B, 1, ..., 1)."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if t.ndim == 0:
        return t
    if t.ndim != 1 or t.shape[0] != x.shape[0]:
        raise ValueError(f"t must be a scalar or have shape (B,) = ({x.shape[0]},), got {tuple(t.shape)}")
    return t.reshape(-1, *([1] * (x.ndim - 1)))


@dataclass(frozen=True)
class PathSample:
    """A point on the path and the velocity it moves with: x_t and v = eps - x0."""

    x_t: Tensor
    velocity: Tensor


class LinearPath:
    """The straight (rectified-flow / SD3) path x_t = (1-t) x0 + t eps, with velocity v = eps - x0.

    Because the path is linear in t, the velocity does not depend on t, and x0 and eps can be read
    back from any (x_t, v, t): x0 = x_t - t v and eps = x_t + (1-t) v.
    """

    def sample(self, x0: Tensor, eps: Tensor, t: Tensor | float) -> PathSample:
        """x_t = (1-t) x0 + t eps and v = eps - x0; t has shape (B,) (or is a scalar)."""
        if x0.shape != eps.shape:
            raise ValueError(f"x0 and eps must have one shape, got {tuple(x0.shape)} and {tuple(eps.shape)}")
        t = expand_t(t, x0)
        x_t = (1 - t) * x0 + t * eps
        return PathSample(x_t=x_t, velocity=eps - x0)

    def x0_from_velocity(self, x_t: Tensor, v: Tensor, t: Tensor | float) -> Tensor:
        """x0_hat = x_t - t v (the one-shot data prediction of a velocity model)."""
        return x_t - expand_t(t, x_t) * v

    def eps_from_velocity(self, x_t: Tensor, v: Tensor, t: Tensor | float) -> Tensor:
        """eps_hat = x_t + (1-t) v (the implied noise prediction)."""
        return x_t + (1 - expand_t(t, x_t)) * v
