"""Resolution-dependent timestep shift (SD3 fixed / resolution, Flux dynamic) and the inference grid.

shift(t; alpha) = alpha t / (1 + (alpha - 1) t), i.e. logit(shift(t; alpha)) = logit(t) + log(alpha):
it fixes 0 and 1, is increasing, composes multiplicatively (shift(shift(t;a);b) = shift(t;ab)) and
moves t towards noise when alpha > 1 (algorithms.md section 2).
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, Callable

import torch
from torch import Tensor

# diffusers' FlowMatchEulerDiscreteScheduler default; its smallest training sigma is 1 / this.
NUM_TRAIN_TIMESTEPS = 1000


def shift(t: Tensor | float, alpha: float) -> Tensor | float:
    """shift(t; alpha) = alpha t / (1 + (alpha - 1) t); works on tensors and on Python floats."""
    # Same value written as alpha t / (alpha t + (1 - t)): this form returns exactly 0 and 1 at the
    # ends in floating point (the textbook form gives 1.0000000000000002 for alpha = 0.1).
    if alpha == 1:  # the identity, without the rounding of t / (t + (1 - t))
        return t
    return alpha * t / (alpha * t + (1 - t))


def _positive(name: str, value: Any) -> Any:
    if value is None or value <= 0:
        raise ValueError(f"{name} must be a positive number for this shift, got {value!r}")
    return value


class Shift(ABC):
    """Maps a training / sampling noise level t to shift(t; alpha), alpha chosen from the image size."""

    @abstractmethod
    def alpha(self, height: int | None = None, width: int | None = None, seq_len: int | None = None) -> float:
        """The shift factor for an image of height x width pixels made of seq_len tokens."""

    def __call__(self, t: Tensor | float, height: int | None = None, width: int | None = None,
                 seq_len: int | None = None) -> Tensor:
        """shift(t; alpha(height, width, seq_len))."""
        return shift(torch.as_tensor(t), self.alpha(height, width, seq_len))

    def inference_sigmas(self, num_steps: int, height: int | None = None, width: int | None = None,
                         seq_len: int | None = None) -> Tensor:
        """The diffusers-equivalent sampling grid for this shift (see `inference_sigmas`)."""
        return inference_sigmas(num_steps, alpha=self.alpha(height, width, seq_len))

    def nested_sigmas(self, num_steps: int, height: int | None = None, width: int | None = None,
                      seq_len: int | None = None) -> Tensor:
        """The shifted uniform grid shift(1 - k / N), k = 0..N: the grid of a distilled student. Unlike the
        diffusers grid it nests (the N-step grid is every other point of the 2N-step one), which progressive
        distillation needs: a student step spans exactly two teacher steps."""
        return nested_sigmas(num_steps, self.alpha(height, width, seq_len))


class NoShift(Shift):
    """alpha = 1: t is used as drawn."""

    def alpha(self, height=None, width=None, seq_len=None) -> float:
        return 1.0

    def __repr__(self) -> str:
        return "NoShift()"


class FixedShift(Shift):
    """A constant alpha (SD3 / SD3.5 ship alpha = 3 for 1024 px)."""

    def __init__(self, alpha: float):
        self.factor = float(_positive("alpha", alpha))

    def alpha(self, height=None, width=None, seq_len=None) -> float:
        return self.factor

    def __repr__(self) -> str:
        return f"FixedShift(alpha={self.factor})"


class ResolutionShift(Shift):
    """alpha = sqrt(height * width) / base_resolution (SD3 section 5.3.2: sqrt of the pixel-count ratio)."""

    def __init__(self, base_resolution: int):
        self.base_resolution = _positive("base_resolution", base_resolution)

    def alpha(self, height=None, width=None, seq_len=None) -> float:
        pixels = _positive("height", height) * _positive("width", width)
        return math.sqrt(pixels) / self.base_resolution

    def __repr__(self) -> str:
        return f"ResolutionShift(base_resolution={self.base_resolution})"


class DynamicShift(Shift):
    """Flux: alpha = exp(mu(L)), mu linear in the token count L through (L0, mu0) and (L1, mu1).

    logit(shift(t)) = logit(t) + mu, which is Flux's time_shift(mu, 1, t).
    """

    def __init__(self, base_shift: float = 0.5, max_shift: float = 1.15, base_seq_len: int = 256,
                 max_seq_len: int = 4096):
        if max_seq_len == base_seq_len:
            raise ValueError("max_seq_len must differ from base_seq_len (mu is a line through both)")
        self.base_shift, self.max_shift = float(base_shift), float(max_shift)
        self.base_seq_len, self.max_seq_len = base_seq_len, max_seq_len

    def mu(self, seq_len: int) -> float:
        """mu(L) = (1-w) base_shift + w max_shift, w = (L - base_seq_len) / (max_seq_len - base_seq_len)."""
        # Written as an interpolation so both end points come out exactly (mu(256) == 0.5, mu(4096) == 1.15).
        w = (_positive("seq_len", seq_len) - self.base_seq_len) / (self.max_seq_len - self.base_seq_len)
        return (1 - w) * self.base_shift + w * self.max_shift

    def alpha(self, height=None, width=None, seq_len=None) -> float:
        return math.exp(self.mu(seq_len))

    def inference_sigmas(self, num_steps, height=None, width=None, seq_len=None) -> Tensor:
        # Flux shifts an unshifted grid once (diffusers use_dynamic_shifting), unlike the static case.
        return inference_sigmas(num_steps, mu=self.mu(seq_len))

    def __repr__(self) -> str:
        return (f"DynamicShift(base_shift={self.base_shift}, max_shift={self.max_shift}, "
                f"base_seq_len={self.base_seq_len}, max_seq_len={self.max_seq_len})")


_SHIFTS: dict[str, Callable[[Any], Shift]] = {
    "none": lambda block: NoShift(),
    "fixed": lambda block: FixedShift(block.alpha),
    "resolution": lambda block: ResolutionShift(block.base_resolution),
    "dynamic": lambda block: DynamicShift(block.base_shift, block.max_shift, block.base_seq_len,
                                          block.max_seq_len),
}
SHIFT_KINDS = tuple(_SHIFTS)


def shift_from_spec(block: Any) -> Shift:
    """The Shift for a `timesteps.shift` spec block (dispatch on block.kind)."""
    try:
        build = _SHIFTS[block.kind]
    except KeyError:
        raise ValueError(f"unknown shift kind {block.kind!r}; valid kinds: {', '.join(SHIFT_KINDS)}") from None
    return build(block)


def inference_sigmas(num_steps: int, alpha: float = 1.0, mu: float | None = None, *,
                     num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> Tensor:
    """The sampling grid sigma_0 = 1 > ... > sigma_{N-1} > sigma_N = 0, shape (N+1,), float32.

    Reproduces diffusers' FlowMatchEulerDiscreteScheduler.set_timesteps(N) exactly:
    - static (mu None): sigma = shift(linspace(1, sigma_min, N); alpha) with sigma_min = shift(1/1000; alpha),
      so the smallest non-zero sigma is shifted twice (about 0.00893 for alpha = 3);
    - dynamic (mu given, Flux): sigma = shift(linspace(1, 1/1000, N); e^mu), shifted once.
    A final 0 is appended (the Euler step into data).

    The grid starts at exactly 1. diffusers computes its first sigma in float32 and shifts it again,
    which for alpha < 1 leaves it up to ~2.4e-6 off 1 (above or below); the match to 1e-6 therefore
    holds for alpha >= 0.25 (and for every mu), where diffusers' own offset stays below 5e-7.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if mu is not None and alpha != 1.0:
        raise ValueError("give either alpha (static shift) or mu (dynamic shift), not both")
    _positive("alpha", alpha)
    sigma_min = 1.0 / num_train_timesteps
    if mu is None:
        # diffusers shifts its training sigmas in __init__ and takes the smallest as sigma_min.
        sigma_min = shift(sigma_min, alpha)
    sigmas = torch.linspace(1.0, sigma_min, num_steps, dtype=torch.float64)
    sigmas = shift(sigmas, alpha if mu is None else math.exp(mu))
    return torch.cat([sigmas.to(torch.float32), torch.zeros(1)])


def nested_sigmas(num_steps: int, alpha: float = 1.0) -> Tensor:
    """shift(linspace(1, 0, N + 1); alpha), float32: starts at exactly 1, ends at exactly 0, and the N-step
    grid is every (M / N)-th point of the M-step grid when N divides M."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    grid = shift(torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64), _positive("alpha", alpha))
    return grid.to(torch.float32)
