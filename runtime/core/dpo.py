"""Diffusion-DPO in flow form (algorithms.md section 7): with e^m the per-pair velocity error of model m on
the winner (w) and the loser (l), under the same t and noise for both,

    inner = -(beta / 2) [ (e_w - e_w^ref) - (e_l - e_l^ref) ],    L = -log sigmoid(inner)

L = log 2 when the policy is the reference; swapping winner and loser negates `inner`. The implicit
accuracy is the share of pairs with inner > 0 (strictly).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def dpo_loss(error_w: Tensor, error_l: Tensor, ref_error_w: Tensor, ref_error_l: Tensor,
             beta: float) -> tuple[Tensor, Tensor]:
    """The mean loss over pairs and the per-pair inner term (B,)."""
    inner = -0.5 * beta * ((error_w - ref_error_w) - (error_l - ref_error_l))
    return -F.logsigmoid(inner).mean(), inner
