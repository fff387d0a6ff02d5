"""Distances between two sets of points (2-D toy data or any d-dimensional features).

sliced_wasserstein is the sliced 2-Wasserstein *distance*
    SW2(a, b) = sqrt( E_u [ W2(u.a, u.b)^2 ] ),  u uniform on the unit sphere,
estimated with random directions. W2 (not W1) because it has closed forms the tests can check
(for a pure shift delta in d dims, E_u[(u.delta)^2] = |delta|^2 / d, so SW2 = |delta| / sqrt(d)), it is
the metric flow matching's straight-line couplings are tied to, and the square root outside the mean
keeps the result in data units and a true metric (symmetric, triangle inequality).

mmd_rbf is the unbiased estimate of the squared maximum mean discrepancy with a Gaussian kernel; it can
be slightly negative when the two sets come from the same distribution.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

DEFAULT_SEED = 0  # directions drawn without a generator use this seed, so a metric is a function of its inputs
_CHUNK = 2048  # rows of a kernel block: bounds memory at _CHUNK x (n + m) doubles


def _as_points(x: Tensor, name: str) -> Tensor:
    x = torch.as_tensor(x).detach().to("cpu", torch.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty (n, d) set of points, got shape {tuple(x.shape)}")
    return x


def _pair(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    a, b = _as_points(a, "a"), _as_points(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b have different dimensions: {a.shape[1]} vs {b.shape[1]}")
    return a, b


def random_directions(num: int, dim: int, generator: torch.Generator | None = None) -> Tensor:
    """(num, dim) unit vectors uniform on the sphere (normalised Gaussians are rotation invariant)."""
    if generator is None:
        generator = torch.Generator().manual_seed(DEFAULT_SEED)
    u = torch.randn(num, dim, generator=generator, dtype=torch.float64)
    return u / u.norm(dim=1, keepdim=True)


def wasserstein2_sq_1d(xs: Tensor, ys: Tensor) -> Tensor:
    """Squared W2 between empirical 1-D distributions, row by row: (P, n), (P, m) sorted -> (P,).

    The W2 optimal plan in 1-D matches quantiles: W2^2 = int_0^1 (Qx(q) - Qy(q))^2 dq. An empirical
    quantile function is a step function with steps at i/n, so on the merged grid of steps i/n and j/m
    both are constant and the integral is an exact finite sum (equal sizes: mean((xs - ys)^2)). This is
    exact quantile matching, not an interpolation, so repeating every point of a set changes nothing.
    """
    n, m = xs.shape[1], ys.shape[1]
    if n == m:
        return ((xs - ys) ** 2).mean(dim=1)
    grid = [torch.arange(1, k + 1, dtype=torch.float64) / k for k in (n, m)]
    steps = torch.unique(torch.cat(grid))  # sorted
    widths = torch.diff(steps, prepend=steps.new_zeros(1))
    mid = steps - widths / 2
    ix = (mid * n).floor().long().clamp_max(n - 1)
    iy = (mid * m).floor().long().clamp_max(m - 1)
    return ((xs[:, ix] - ys[:, iy]) ** 2 * widths).sum(dim=1)


def sliced_wasserstein(a: Tensor, b: Tensor, num_projections: int = 256,
                       generator: torch.Generator | None = None) -> float:
    """Sliced W2 distance between point sets a (n, d) and b (m, d); sizes may differ (see module doc)."""
    a, b = _pair(a, b)
    u = random_directions(num_projections, a.shape[1], generator)
    # (P, n) layout: each projection is a contiguous row, which sorts about twice as fast as columns.
    xs = (u @ a.T).sort(dim=1).values
    ys = (u @ b.T).sort(dim=1).values
    return float(wasserstein2_sq_1d(xs, ys).mean().clamp_min(0).sqrt())


def _kernel_sums(a: Tensor, b: Tensor, gamma: float) -> tuple[float, float, float]:
    """(sum over a x a, b x b, a x b) of exp(-gamma |x - y|^2), diagonals included.

    One pass over the pooled points in row blocks (memory _CHUNK x (n + m)); multiplying a kernel block by
    the two indicator columns [x in a, x in b] gives each row's sums over a's and over b's points.
    """
    pooled, n = torch.cat([a, b]), len(a)
    in_a = torch.arange(len(pooled)) < n
    indicators = torch.stack([in_a, ~in_a], dim=1).to(pooled.dtype)
    rows = [torch.exp(-gamma * torch.cdist(pooled[i:i + _CHUNK], pooled).square()) @ indicators
            for i in range(0, len(pooled), _CHUNK)]
    sums = torch.cat(rows)  # (n + m, 2)
    return float(sums[:n, 0].sum()), float(sums[n:, 1].sum()), float(sums[:n, 1].sum())


def median_bandwidth(a: Tensor, b: Tensor, max_points: int = 1000) -> float:
    """Median pairwise distance of the pooled sets (evenly strided subset of at most max_points points)."""
    pooled = torch.cat([a, b])
    pooled = pooled[:: max(1, len(pooled) // max_points)]
    distances = torch.pdist(pooled)  # each unordered pair once, no diagonal
    h = float(distances.median()) if len(distances) else 0.0
    return h if h > 0 else 1.0  # all points equal: any bandwidth gives MMD 0; avoid dividing by 0


def mmd_rbf(a: Tensor, b: Tensor, bandwidth: float | None = None) -> float:
    """Unbiased squared MMD with k(x, y) = exp(-|x - y|^2 / (2 h^2)); h by the median heuristic when None."""
    a, b = _pair(a, b)
    n, m = len(a), len(b)
    if n < 2 or m < 2:
        raise ValueError("the unbiased MMD needs at least 2 points in each set")
    h = median_bandwidth(a, b) if bandwidth is None else float(bandwidth)
    if h <= 0:
        raise ValueError(f"bandwidth must be > 0, got {h}")
    gamma = 1.0 / (2 * h * h)
    # The unbiased within-set terms leave out the diagonal, where k(x, x) = 1 exactly.
    s_aa, s_bb, s_ab = _kernel_sums(a, b, gamma)
    return (s_aa - n) / (n * (n - 1)) + (s_bb - m) / (m * (m - 1)) - 2 * s_ab / (n * m)


def baseline(sampler: Callable[[int, torch.Generator], Tensor], n: int, seed: int,
             num_projections: int = 256) -> dict[str, float]:
    """The metrics between two independent samples of n points of the data: the floor a model is judged against."""
    generator = torch.Generator().manual_seed(seed)
    first = sampler(n, generator)
    second = sampler(n, generator)
    directions = torch.Generator().manual_seed(seed)
    return {
        "sliced_wasserstein": sliced_wasserstein(first, second, num_projections, generator=directions),
        "mmd_rbf": mmd_rbf(first, second),
    }


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2) between the Gaussians fitted to two sets
    of feature vectors (rows), computed with symmetric eigendecompositions in float64 (FID's formula)."""
    a, b = a.double().flatten(1), b.double().flatten(1)
    if a.shape[1] != b.shape[1] or len(a) < 2 or len(b) < 2:
        raise ValueError(f"the Frechet distance needs two sets of >= 2 vectors of one width, got {tuple(a.shape)} "
                         f"and {tuple(b.shape)}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    values, vectors = torch.linalg.eigh(s_a)
    root_a = vectors @ torch.diag(values.clamp_min(0).sqrt()) @ vectors.T
    cross = torch.linalg.eigvalsh(root_a @ s_b @ root_a).clamp_min(0).sqrt().sum()
    return float((mu_a - mu_b).pow(2).sum() + torch.trace(s_a) + torch.trace(s_b) - 2 * cross)
