"""Training densities of the noise level t, loss weights w(t), and their pairing with a shift.

Each sampler is a density pi(t) on (0, 1) reached by mapping a uniform or normal draw
(algorithms.md section 2). `TimestepDistribution.draw` returns t together with its loss weight, so
a training step never has to know which scheme produced its t (after DiT's timestep sampler).
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from .shifts import Shift, shift_from_spec

# Samples are kept this far from 0 and 1: t = 0 or 1 makes x0_hat, eps_hat or t^-2 degenerate.
T_EPS = 1e-6
# Largest mode scale for which t(u) is monotone: 2 / (pi - 2).
MODE_SCALE_MAX = 2.0 / (math.pi - 2.0)


def _clamp(t: Tensor) -> Tensor:
    return t.clamp(T_EPS, 1.0 - T_EPS)


def _inside(t: Tensor, pdf: Tensor) -> Tensor:
    """pdf where 0 < t < 1 and 0 elsewhere (the formulas are undefined outside the open interval)."""
    return torch.where((t > 0) & (t < 1), pdf, torch.zeros_like(pdf))


def _uniform(n: int, generator: torch.Generator | None, device) -> Tensor:
    device = device if device is not None else (generator.device if generator is not None else None)
    return torch.rand(n, generator=generator, device=device, dtype=torch.float32)


class TimestepSampler(ABC):
    """A density pi(t) on (0, 1): `sample` draws from it, `density` evaluates it in closed form."""

    @abstractmethod
    def sample(self, n: int, generator: torch.Generator | None = None, device=None) -> Tensor:
        """n float32 draws, shape (n,), strictly inside (0, 1)."""

    @abstractmethod
    def density(self, t: Tensor) -> Tensor:
        """pi(t), elementwise."""


@dataclass(frozen=True)
class Uniform(TimestepSampler):
    """t = u, u ~ U(0, 1); pi(t) = 1."""

    def sample(self, n, generator=None, device=None) -> Tensor:
        return _clamp(_uniform(n, generator, device))

    def density(self, t: Tensor) -> Tensor:
        t = torch.as_tensor(t)
        return _inside(t, torch.ones_like(t, dtype=torch.promote_types(t.dtype, torch.float32)))


@dataclass(frozen=True)
class LogitNormal(TimestepSampler):
    """t = sigmoid(n), n ~ N(m, s^2); pi(t) = exp(-(logit t - m)^2 / (2 s^2)) / (s sqrt(2 pi) t (1-t))."""

    m: float = 0.0
    s: float = 1.0

    def __post_init__(self):
        if not self.s > 0:
            raise ValueError(f"LogitNormal needs s > 0, got {self.s}")

    def sample(self, n, generator=None, device=None) -> Tensor:
        device = device if device is not None else (generator.device if generator is not None else None)
        z = torch.randn(n, generator=generator, device=device, dtype=torch.float32)
        return _clamp(torch.sigmoid(self.m + self.s * z))

    def density(self, t: Tensor) -> Tensor:
        t = torch.as_tensor(t)
        t = t.to(torch.promote_types(t.dtype, torch.float32))
        logit = torch.log(t) - torch.log1p(-t)
        pdf = torch.exp(-0.5 * ((logit - self.m) / self.s) ** 2) / (self.s * math.sqrt(2 * math.pi) * t * (1 - t))
        return _inside(t, pdf)


@dataclass(frozen=True)
class Mode(TimestepSampler):
    """t = f(u) = 1 - u - s (cos^2(pi u / 2) - 1 + u), u ~ U(0, 1); pi(t) = 1 / |f'(f^{-1}(t))|.

    f'(u) = -(1 + s) + s (pi/2) sin(pi u); f is decreasing (a valid map) for -1 <= s <= 2/(pi-2).
    s = 0 is uniform; the density at 0.5 is 1 / (1 - s (pi/2 - 1)).
    """

    scale: float = 1.29

    def __post_init__(self):
        if not -1.0 <= self.scale <= MODE_SCALE_MAX:
            raise ValueError(f"Mode needs -1 <= scale <= 2/(pi-2) = {MODE_SCALE_MAX:.4f}, got {self.scale}")

    def warp(self, u: Tensor) -> Tensor:
        """f(u) = 1 - u - s (cos^2(pi u / 2) - 1 + u)."""
        return 1 - u - self.scale * (torch.cos(math.pi * u / 2) ** 2 - 1 + u)

    def sample(self, n, generator=None, device=None) -> Tensor:
        return _clamp(self.warp(_uniform(n, generator, device)))

    def density(self, t: Tensor) -> Tensor:
        t = torch.as_tensor(t)
        out_dtype = torch.promote_types(t.dtype, torch.float32)
        t64 = t.to(torch.float64)
        u = self._inverse(t64)
        return _inside(t64, 1.0 / self._slope(u).abs()).to(out_dtype)

    def _slope(self, u: Tensor) -> Tensor:
        """f'(u) = -(1 + s) + s (pi/2) sin(pi u)."""
        return -(1 + self.scale) + self.scale * (math.pi / 2) * torch.sin(math.pi * u)

    def _inverse(self, t: Tensor, max_iters: int = 100) -> Tensor:
        """u = f^{-1}(t) in float64 by Newton's method kept inside a shrinking bracket.

        f has no closed-form inverse. Plain Newton stalls where f' vanishes (u = 0.5 at the largest
        scale, the ends at scale -1), so any step leaving the bracket is replaced by bisection.
        """
        lo, hi = torch.zeros_like(t), torch.ones_like(t)
        u = (1 - t).clamp(0, 1)  # exact for s = 0, close for moderate s
        for _ in range(max_iters):
            residual = self.warp(u) - t
            # f decreases: f(u) > t means the root lies above u.
            lo, hi = torch.where(residual > 0, u, lo), torch.where(residual > 0, hi, u)
            newton = u - residual / self._slope(u)
            u_next = torch.where((newton >= lo) & (newton <= hi), newton, 0.5 * (lo + hi))
            # f(u) - t has a rounding floor near 1e-15, and where f' is tiny that floor moves u a lot:
            # a point is done once either its step or its residual is at that floor.
            done = bool((((u_next - u).abs() <= 1e-13) | (residual.abs() <= 1e-15)).all())
            u = u_next
            if done:
                break
        return u


@dataclass(frozen=True)
class CosMap(TimestepSampler):
    """t = 1 - 1 / (tan(pi u / 2) + 1), u ~ U(0, 1); pi(t) = 2 / (pi (1 - 2t + 2t^2))."""

    def sample(self, n, generator=None, device=None) -> Tensor:
        u = _uniform(n, generator, device)
        return _clamp(1 - 1 / (torch.tan(math.pi * u / 2) + 1))

    def density(self, t: Tensor) -> Tensor:
        t = torch.as_tensor(t)
        t = t.to(torch.promote_types(t.dtype, torch.float32))
        return _inside(t, 2 / (math.pi * (1 - 2 * t + 2 * t**2)))


_SAMPLERS: dict[str, Callable[[Any], TimestepSampler]] = {
    "uniform": lambda block: Uniform(),
    "logit_normal": lambda block: LogitNormal(block.m, block.s),
    "mode": lambda block: Mode(block.scale),
    "cosmap": lambda block: CosMap(),
}
SAMPLER_KINDS = tuple(_SAMPLERS)


def sampler_from_spec(block: Any) -> TimestepSampler:
    """The sampler for a `timesteps.sampler` spec block (dispatch on block.kind)."""
    try:
        build = _SAMPLERS[block.kind]
    except KeyError:
        raise ValueError(f"unknown sampler kind {block.kind!r}; valid kinds: {', '.join(SAMPLER_KINDS)}") from None
    return build(block)


_WEIGHTS: dict[str, Callable[[Tensor], Tensor]] = {
    "none": torch.ones_like,
    "sigma_sqrt": lambda t: t**-2,
    "cosmap": lambda t: 2 / (math.pi * (1 - 2 * t + 2 * t**2)),
}
LOSS_WEIGHTINGS = tuple(_WEIGHTS)


def loss_weight(kind: str, t: Tensor) -> Tensor:
    """w(t): none -> 1, sigma_sqrt -> t^-2, cosmap -> 2 / (pi (1 - 2t + 2t^2)) (diffusers' SD3 weights).

    An unknown kind is an error: diffusers silently falls back to 1, which hides typos.
    """
    try:
        weight = _WEIGHTS[kind]
    except KeyError:
        raise ValueError(f"unknown loss weighting {kind!r}; valid: {', '.join(LOSS_WEIGHTINGS)}") from None
    return weight(t)


@dataclass(frozen=True)
class TimestepSample:
    """Training noise levels t, shape (n,), and their per-sample loss weights w(t), shape (n,)."""

    t: Tensor
    weight: Tensor


class TimestepDistribution:
    """t = shift(t_0; alpha(size)), t_0 ~ sampler, with weight = loss_weight(kind, t)."""

    def __init__(self, sampler: TimestepSampler, shift: Shift, loss_weighting: str = "none"):
        if loss_weighting not in _WEIGHTS:
            raise ValueError(f"unknown loss weighting {loss_weighting!r}; valid: {', '.join(LOSS_WEIGHTINGS)}")
        self.sampler, self.shift, self.loss_weighting = sampler, shift, loss_weighting

    @classmethod
    def from_spec(cls, block: Any) -> TimestepDistribution:
        """From a `timesteps:` spec block (sampler, shift, loss_weighting)."""
        return cls(sampler_from_spec(block.sampler), shift_from_spec(block.shift), block.loss_weighting)

    def draw(self, n: int, generator: torch.Generator | None, height: int | None, width: int | None,
             seq_len: int | None, device=None) -> TimestepSample:
        """n shifted draws for images of height x width pixels and seq_len tokens."""
        t = self.shift(self.sampler.sample(n, generator, device), height, width, seq_len)
        # The shift is monotone and fixes 0 and 1, but float rounding could still reach them.
        t = _clamp(t)
        return TimestepSample(t=t, weight=loss_weight(self.loss_weighting, t))

    def __repr__(self) -> str:
        return f"TimestepDistribution({self.sampler!r}, {self.shift!r}, {self.loss_weighting!r})"
