"""ODE samplers for dx/dt = v(x, t), integrated from t = 1 (noise) down to t = 0 (data) on a sigma grid.

A grid is a strictly decreasing 1-D tensor sigma_0 > ... > sigma_N (usually 1 ... 0, see
`shifts.inference_sigmas`). Steps run in float32 at least, as diffusers' scheduler does, because a
bf16 state drifts over tens of small steps.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

VelocityFn = Callable[[Tensor, Tensor], Tensor]
"""v(x, t): x of shape (B, ...), t of shape (B,) -> velocity of x's shape."""

StepFn = Callable[[VelocityFn, Tensor, float, float], Tensor]


def cfg_velocity(v_cond: Tensor, v_uncond: Tensor, scale: float) -> Tensor:
    """Classifier-free guidance: v = v_uncond + scale (v_cond - v_uncond); scale 1 is the conditional field."""
    return v_uncond + scale * (v_cond - v_uncond)


def _velocity(velocity_fn: VelocityFn, x: Tensor, t: float) -> Tensor:
    t_b = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
    return velocity_fn(x, t_b).to(x.dtype)


def euler_step(velocity_fn: VelocityFn, x: Tensor, t: float, t_next: float) -> Tensor:
    """x' = x + (t' - t) v(x, t)."""
    return x + (t_next - t) * _velocity(velocity_fn, x, t)


def heun_step(velocity_fn: VelocityFn, x: Tensor, t: float, t_next: float) -> Tensor:
    """x' = x + (t' - t) (v(x, t) + v(x_e, t')) / 2 with the Euler guess x_e; plain Euler when t' = 0.

    The last step into t' = 0 stays Euler because v at t = 0 is never trained on (and is singular for
    the exact field of a finite data set); this is also what k-diffusion and diffusers do.
    """
    h = t_next - t
    v = _velocity(velocity_fn, x, t)
    x_euler = x + h * v
    if t_next == 0:
        return x_euler
    return x + h * 0.5 * (v + _velocity(velocity_fn, x_euler, t_next))


_SOLVERS: dict[str, StepFn] = {"euler": euler_step, "heun": heun_step}
SOLVERS = (*_SOLVERS, "consistency")


def _check_grid(sigmas: Tensor) -> list[float]:
    if sigmas.ndim != 1 or sigmas.numel() < 2:
        raise ValueError(f"sigmas must be a 1-D grid with at least 2 entries, got shape {tuple(sigmas.shape)}")
    grid = sigmas.double().tolist()
    if any(b >= a for a, b in zip(grid[:-1], grid[1:])):
        raise ValueError("sigmas must be strictly decreasing (sampling runs from noise t=1 to data t=0)")
    return grid


def _integrate(step: StepFn, velocity_fn: VelocityFn, x: Tensor, sigmas: Tensor, keep: bool) -> list[Tensor]:
    grid = _check_grid(sigmas)
    x = x.to(torch.promote_types(x.dtype, torch.float32))
    path = [x]
    for t, t_next in zip(grid[:-1], grid[1:]):
        x = step(velocity_fn, x, t, t_next)
        if keep:
            path.append(x)
        else:
            path[0] = x
    return path


def euler(velocity_fn: VelocityFn, x: Tensor, sigmas: Tensor) -> Tensor:
    """Euler: x_{i+1} = x_i + (sigma_{i+1} - sigma_i) v(x_i, sigma_i); returns x at sigmas[-1]."""
    return _integrate(euler_step, velocity_fn, x, sigmas, keep=False)[-1]


def heun(velocity_fn: VelocityFn, x: Tensor, sigmas: Tensor) -> Tensor:
    """Heun (explicit trapezoid, 2nd order), Euler on a final step into sigma = 0; returns x at sigmas[-1]."""
    return _integrate(heun_step, velocity_fn, x, sigmas, keep=False)[-1]


def consistency(velocity_fn: VelocityFn, x: Tensor, sigmas: Tensor, renoise: Callable[[int, tuple], Tensor]) -> Tensor:
    """Multi-step consistency sampling (LCM): at each sigma_i jump to the clean estimate f(x, t) = x - t v(x, t),
    then re-noise it to sigma_{i+1} with fresh noise renoise(i, shape); returns the last clean estimate.
    One step is x - v(x, 1), the same as one Euler step."""
    grid = _check_grid(sigmas)
    x = x.to(torch.promote_types(x.dtype, torch.float32))
    for i, (t, t_next) in enumerate(zip(grid[:-1], grid[1:])):
        x0 = x - t * _velocity(velocity_fn, x, t)
        if t_next <= 0:
            return x0
        x = (1 - t_next) * x0 + t_next * renoise(i, tuple(x.shape)).to(x)
    return x0


@torch.no_grad()
def sample_ode(velocity_fn: VelocityFn, noise: Tensor, sigmas: Tensor, solver: str = "euler",
               return_trajectory: bool = False, renoise: Callable[[int, tuple], Tensor] | None = None) -> Tensor:
    """Integrate from x = noise at sigmas[0] down the grid.

    Returns the final x (float32, or float64 for float64 noise), or with return_trajectory the stacked
    iterates of shape (len(sigmas), *noise.shape), whose first entry is the noise and last the sample.
    Runs without autograd; call `euler` / `heun` directly to differentiate through sampling. Solver
    "consistency" (a consistency-distilled student) draws fresh noise at every step from `renoise`.
    """
    if solver == "consistency":
        if renoise is None or return_trajectory:
            raise ValueError("the consistency solver needs renoise and returns no trajectory")
        return consistency(velocity_fn, noise, sigmas, renoise)
    try:
        step = _SOLVERS[solver]
    except KeyError:
        raise ValueError(f"unknown solver {solver!r}; valid: {', '.join(SOLVERS)}") from None
    path = _integrate(step, velocity_fn, noise, sigmas, keep=return_trajectory)
    return torch.stack(path) if return_trajectory else path[-1]
