"""Reward feedback learning, ReFL (algorithms.md section 5): an ODE rollout without gradient down to a
late step drawn from grad_steps, one step with gradient, the reward's ReLU(margin - r) x grad_scale,
plus the flow-matching loss on real data at pretrain_loss_weight.

The objective lands with issue 13; its cost model is here so `flowspec plan` estimates the stage.
"""
from __future__ import annotations

from .base import TRAIN_PASSES, Cost, register_cost


@register_cost("reward_feedback")
def cost(stage, options=None) -> Cost:
    rollout = stage.sampling_steps - 1  # forwards without gradient before the step that has one
    real_data = TRAIN_PASSES if stage.pretrain_loss_weight > 0 else 0.0
    return Cost(forwards_per_sample=rollout + TRAIN_PASSES + real_data)
