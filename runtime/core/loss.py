"""The flow-matching regression loss and condition dropout for classifier-free guidance.

L = mean_b [ w_b * mean_{non-batch dims} (v_theta - (eps - x0))^2 ]   (algorithms.md section 1)
"""
from __future__ import annotations

import torch
from torch import Tensor


def squared_error(v_pred: Tensor, v_target: Tensor) -> Tensor:
    """(v_pred - v_target)^2 elementwise, in at least float32: a bf16 mean over a whole latent loses the small
    per-sample differences."""
    if v_pred.shape != v_target.shape:
        raise ValueError(f"prediction and target shapes differ: {tuple(v_pred.shape)} vs {tuple(v_target.shape)}")
    if v_pred.ndim < 1:
        raise ValueError("the loss needs a batch dimension")
    dtype = torch.promote_types(torch.promote_types(v_pred.dtype, v_target.dtype), torch.float32)
    return (v_pred.to(dtype) - v_target.to(dtype)) ** 2


def per_sample_loss(v_pred: Tensor, v_target: Tensor) -> Tensor:
    """l_b = mean over all non-batch dims of (v_pred - v_target)^2, shape (B,)."""
    sq = squared_error(v_pred, v_target)
    return sq.reshape(sq.shape[0], -1).mean(dim=1)


def flow_matching_loss(v_pred: Tensor, v_target: Tensor, weight: Tensor | None = None) -> Tensor:
    """mean_b [ w_b l_b ] with l_b = per_sample_loss; w = 1 when weight is None. A scalar."""
    if weight is None:  # the mean of equal-sized per-sample means: one mean over everything, fewer kernels
        return squared_error(v_pred, v_target).mean()
    l_b = per_sample_loss(v_pred, v_target)
    if weight.shape != l_b.shape:
        raise ValueError(f"weight must have shape (B,) = {tuple(l_b.shape)}, got {tuple(weight.shape)}")
    return (weight.to(l_b.dtype) * l_b).mean()


def condition_dropout_mask(batch: int, p: float, generator: torch.Generator | None = None,
                           device=None) -> Tensor:
    """A (B,) bool mask, True with probability p: those samples train on the empty condition (CFG)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    device = device if device is not None else (generator.device if generator is not None else None)
    # rand lies in [0, 1), so p = 0 never drops and p = 1 always drops.
    return torch.rand(batch, generator=generator, device=device) < p
