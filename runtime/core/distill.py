"""The arithmetic of distillation (algorithms.md section 9), in flowspec's convention x_t = (1-t) x0 + t eps,
v = eps - x0, sampling from t = 1 (noise) to t = 0 (data). Pure functions of tensors: the objectives
(runtime/objectives/) feed them the models.

- progressive distillation: one student step over [t, t''] matches two teacher Euler steps t -> t' -> t'';
- consistency (LCM in flow form): f(x, t) = x - t v(x, t), the x0 estimate, so f(x, 0) = x for any v;
- pseudo-Huber distance, EMA of a target network;
- adversarial distillation: hinge losses and the R1 penalty;
- distribution matching (DMD2): the normalised score difference and the loss whose gradient it is;
- straightness of a field along its own ODE trajectories (reflow's report).
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

from .paths import expand_t

Field = Callable[[Tensor, Tensor], Tensor]  # v(x, t), t of shape (B,)


def _full(t: float | Tensor, x: Tensor) -> Tensor:
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    return t.expand(len(x)) if t.ndim == 0 else t


def progressive_target(teacher: Field, x_t: Tensor, t: float | Tensor, t_mid: float | Tensor,
                       t_end: float | Tensor) -> Tensor:
    """The velocity that takes x_t to where two teacher Euler steps t -> t_mid -> t_end land, in one step:
    v* = (x_end - x_t) / (t_end - t). For equal halves it is the mean of the two teacher velocities."""
    t, t_mid, t_end = _full(t, x_t), _full(t_mid, x_t), _full(t_end, x_t)
    x_mid = x_t + expand_t(t_mid - t, x_t) * teacher(x_t, t)
    x_end = x_mid + expand_t(t_end - t_mid, x_t) * teacher(x_mid, t_mid)
    return (x_end - x_t) / expand_t(t_end - t, x_t)


def consistency_function(x: Tensor, t: float | Tensor, velocity: Tensor) -> Tensor:
    """f(x, t) = x - t v: the clean estimate, with the boundary f(x, 0) = x built in (no c_skip / c_out)."""
    return x - expand_t(_full(t, x), x) * velocity


def pseudo_huber(a: Tensor, b: Tensor, c: float) -> Tensor:
    """Per-sample sqrt(||a - b||^2 + c^2) - c: about ||a - b||^2 / (2c) for small residuals, ||a - b|| - c for large."""
    squared = (a - b).flatten(1).pow(2).sum(dim=1)
    return squared / ((squared + c * c).sqrt() + c)  # the same, without cancelling when ||a - b|| << c


@torch.no_grad()
def ema_update(target: Iterable[Tensor], online: Iterable[Tensor], decay: float) -> None:
    """target <- decay * target + (1 - decay) * online, in place (decay 1 leaves the target as it is)."""
    for t, o in zip(target, online, strict=True):
        t.lerp_(o.to(t.dtype), 1.0 - decay)


def hinge_discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """E relu(1 - D(real)) + E relu(1 + D(fake)): zero once real scores >= 1 and fake scores <= -1."""
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def hinge_generator_loss(fake_logits: Tensor) -> Tensor:
    return -fake_logits.mean()


def r1_penalty(logits: Tensor, inputs: Tensor) -> Tensor:
    """E ||d D(x) / d x||^2 over the batch (inputs must require grad and logits be computed from them);
    0 for a discriminator that does not depend on its input."""
    if not logits.requires_grad:
        return logits.new_zeros(())
    (grad,) = torch.autograd.grad(logits.sum(), inputs, create_graph=True, allow_unused=True)
    if grad is None:
        return logits.new_zeros(())
    return grad.flatten(1).pow(2).sum(dim=1).mean()


def dmd_gradient(x_hat: Tensor, clean_fake: Tensor, clean_real: Tensor) -> Tensor:
    """DMD's update direction on the generator's samples: (mu_fake - mu_real) / mean|x_hat - mu_real| per
    sample (mu: each score model's clean estimate of the re-noised sample); zero when fake equals real."""
    scale = (x_hat - clean_real).abs().flatten(1).mean(dim=1).clamp_min(1e-12)
    return (clean_fake - clean_real) / expand_t(scale, x_hat)


def dmd_loss(x_hat: Tensor, gradient: Tensor) -> Tensor:
    """0.5 ||x_hat - sg(x_hat - g)||^2 summed per sample, averaged: its gradient in x_hat is g / B."""
    target = (x_hat - gradient).detach()
    return 0.5 * (x_hat - target).flatten(1).pow(2).sum(dim=1).mean()


@torch.no_grad()
def straightness(field: Field, noise: Tensor, sigmas: Tensor) -> float:
    """How far a field's ODE trajectories bend: the mean over Euler steps of ||(x_1 - x_0) - v(x_t, t)||^2 per
    dimension, x_1 the noise and x_0 where the trajectory ends (0 for straight paths, where one step is exact)."""
    x, states = noise, []
    for t, t_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        v = field(x, _full(t, x))
        states.append(v)
        x = x + (t_next - t) * v
    chord = noise - x  # dx/dt of the straight line from the end (t=0) to the noise (t=1)
    return torch.stack([(chord - v).pow(2).flatten(1).mean(dim=1) for v in states]).mean().item()
