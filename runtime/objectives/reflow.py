"""Reflow / InstaFlow (algorithms.md section 9.2): flow matching on (noise, teacher sample) pairs that the
teacher ODE generates once.

The objective lands with issue 14; its cost model is here so `flowspec plan` estimates the stage.
"""
from __future__ import annotations

from .base import TRAIN_PASSES, Cost, register_cost


@register_cost("reflow")
def cost(stage, options=None) -> Cost:
    cfg = 2 if stage.cfg_scale not in (0.0, 1.0) else 1
    return Cost(forwards_per_sample=TRAIN_PASSES, one_off_forwards=stage.num_pairs * stage.teacher_steps * cfg,
                frozen_copies=("teacher",))
