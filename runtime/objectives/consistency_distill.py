"""Consistency distillation, LCM in flow form (algorithms.md section 9.3): f(x, t) = x - t v, a guided
teacher step of `skip` on the teacher grid, an EMA target network.

The objective lands with issue 14; its cost model is here so `flowspec plan` estimates the stage.
"""
from __future__ import annotations

from .base import TRAIN_PASSES, Cost, register_cost


@register_cost("consistency_distill")
def cost(stage, options=None) -> Cost:
    # the guided teacher step (conditional + unconditional), the target network, the student
    return Cost(forwards_per_sample=2 + 1 + TRAIN_PASSES, frozen_copies=("teacher",))
