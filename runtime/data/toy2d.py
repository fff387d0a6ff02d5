"""2-D target distributions for fast algorithm checks: exact samplers, deterministic batches, mixture oracles.

Every sampler draws only from the `torch.Generator` it is given, so a batch is a pure function of the
generator's seed; `Toy2DBatches` seeds one generator per batch index, which is what makes resuming
training mid-epoch reproduce the exact batches an uninterrupted run would have seen.
"""
from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

Sampler = Callable[[Any, int, torch.Generator], Tensor]
_SAMPLERS: dict[str, Sampler] = {}


def _register(kind: str) -> Callable[[Sampler], Sampler]:
    def wrap(fn: Sampler) -> Sampler:
        _SAMPLERS[kind] = fn
        return fn

    return wrap


def sample_toy2d(distribution: Any, n: int, generator: torch.Generator) -> Tensor:
    """`n` exact samples, shape (n, 2) float32, of a toy distribution spec block (looked up by `kind`)."""
    kind = getattr(distribution, "kind", None)
    if kind not in _SAMPLERS:
        raise ValueError(f"unknown toy 2-D distribution kind {kind!r}; known: {sorted(_SAMPLERS)}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    # Sampling happens in float64 so that moment checks are limited by Monte Carlo error, not rounding.
    return _SAMPLERS[kind](distribution, n, generator).to(torch.float32)


def _uniform(n: int, generator: torch.Generator) -> Tensor:
    return torch.rand(n, generator=generator, dtype=torch.float64)


def _normal(shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    return torch.randn(shape, generator=generator, dtype=torch.float64)


def mixture_parameters(distribution: Any) -> tuple[Tensor, Tensor, Tensor]:
    """(means (K, 2), stds (K,), weights (K,) summing to 1), float64, of a gaussian_mixture block."""
    if getattr(distribution, "kind", None) != "gaussian_mixture":
        raise ValueError(f"mixture_parameters needs a gaussian_mixture, got {getattr(distribution, 'kind', None)!r}")
    weights = None if distribution.weights is None else tuple(distribution.weights)
    return _mixture(tuple(tuple(m) for m in distribution.means), tuple(distribution.stds), weights)


@functools.lru_cache(maxsize=64)
def _mixture(means: tuple, stds: tuple, weights: tuple | None) -> tuple[Tensor, Tensor, Tensor]:
    """Built once per mixture, not once per batch (read-only: callers index them)."""
    k = len(means)
    weight = torch.full((k,), 1.0 / k, dtype=torch.float64) if weights is None else torch.tensor(weights, dtype=torch.float64)
    return torch.tensor(means, dtype=torch.float64), torch.tensor(stds, dtype=torch.float64), weight / weight.sum()


@_register("gaussian_mixture")
def _gaussian_mixture(dist: Any, n: int, generator: torch.Generator) -> Tensor:
    means, stds, weights = mixture_parameters(dist)
    if n == 0:
        return torch.zeros(0, 2, dtype=torch.float64)
    component = torch.multinomial(weights, n, replacement=True, generator=generator)
    return means[component] + stds[component, None] * _normal((n, 2), generator)


def dark_squares(squares: int) -> Tensor:
    """(column, row) indices, counted from the bottom-left corner, of the dark squares.

    As on a chess board (a1 is dark), a square is dark when column + row is even, so the bottom-left
    corner square is always dark and there are ceil(squares**2 / 2) dark squares.
    """
    cols, rows = torch.meshgrid(torch.arange(squares), torch.arange(squares), indexing="ij")
    cells = torch.stack([cols.flatten(), rows.flatten()], dim=1)
    return cells[(cells.sum(dim=1) % 2) == 0]


@_register("checkerboard")
def _checkerboard(dist: Any, n: int, generator: torch.Generator) -> Tensor:
    cells = dark_squares(dist.squares).to(torch.float64)
    side = dist.extent / dist.squares
    # All dark squares have the same area, so uniform on their union = a uniform square, then uniform inside it.
    pick = torch.randint(len(cells), (n,), generator=generator)
    inside = torch.stack([_uniform(n, generator), _uniform(n, generator)], dim=1)
    return -dist.extent / 2 + (cells[pick] + inside) * side


@_register("rings")
def _rings(dist: Any, n: int, generator: torch.Generator) -> Tensor:
    k = torch.arange(1, dist.num_rings + 1, dtype=torch.float64)
    # Ring k has circumference proportional to k: picking rings by length gives uniform density along the rings.
    if n == 0:
        return torch.zeros(0, 2, dtype=torch.float64)
    ring = torch.multinomial(k / k.sum(), n, replacement=True, generator=generator)
    angle = 2 * math.pi * _uniform(n, generator)
    radius = k[ring] * dist.radius + dist.noise * _normal((n,), generator)
    return torch.stack([radius * angle.cos(), radius * angle.sin()], dim=1)


# make_moons' raw layout has mean (0.5, 0.25) and x-variance 3/4 (for uniform angles); centring and scaling
# by 2/sqrt(3) gives mean 0 and unit x-variance, and makes the two moons mirror images through the origin.
MOONS_CENTRE = (0.5, 0.25)
MOONS_SCALE = 2.0 / math.sqrt(3.0)


@_register("moons")
def _moons(dist: Any, n: int, generator: torch.Generator) -> Tensor:
    angle = math.pi * _uniform(n, generator)
    upper = torch.rand(n, generator=generator) < 0.5
    outer = torch.stack([angle.cos(), angle.sin()], dim=1)
    inner = torch.stack([1 - angle.cos(), 0.5 - angle.sin()], dim=1)
    raw = torch.where(upper[:, None], outer, inner)
    centred = (raw - torch.tensor(MOONS_CENTRE, dtype=torch.float64)) * MOONS_SCALE
    # The noise is added after scaling so `noise` is a std in the units of the returned points.
    return centred + dist.noise * _normal((n, 2), generator)


def batch_seed(seed: int, index: int) -> int:
    """A 63-bit generator seed from (seed, index); hashed so nearby pairs give unrelated streams."""
    digest = hashlib.blake2b(f"toy2d:{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class Toy2DBatches:
    """Batches of a `toy2d` source addressed by index: batch(i, size) depends on (seed, i, size) only."""

    def __init__(self, block: Any, seed: int):
        self.block = block
        self.distribution = block.distribution
        self.seed = int(seed)
        if self.distribution.kind not in _SAMPLERS:
            raise ValueError(f"unknown toy 2-D distribution kind {self.distribution.kind!r}")

    @property
    def num_samples(self) -> int:
        """Points per epoch, from the spec."""
        return self.block.num_samples

    def batches_per_epoch(self, size: int) -> int:
        return math.ceil(self.num_samples / size)

    def batch(self, index: int, size: int) -> Tensor:
        if index < 0 or size <= 0:
            raise ValueError(f"need index >= 0 and size > 0, got index={index}, size={size}")
        generator = torch.Generator().manual_seed(batch_seed(self.seed, index))
        return sample_toy2d(self.distribution, size, generator)
