"""Progressive distillation (algorithms.md section 9.1): one student step matches two teacher steps;
the teacher becomes the student after each round.

The objective lands with issue 14; its cost model is here so `flowspec plan` estimates the stage.
"""
from __future__ import annotations

from .base import TRAIN_PASSES, Cost, register_cost


@register_cost("progressive_distill")
def cost(stage, options=None) -> Cost:
    return Cost(forwards_per_sample=2 + TRAIN_PASSES, frozen_copies=("teacher",))  # two teacher steps
