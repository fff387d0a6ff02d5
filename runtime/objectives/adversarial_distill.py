"""Adversarial diffusion distillation, ADD (algorithms.md section 9.4): hinge loss of discriminator heads
on a frozen feature network, plus distillation against the teacher's denoised estimate.

The objective lands with issue 14; its cost model is here so `flowspec plan` estimates the stage.
"""
from __future__ import annotations

from .base import TRAIN_PASSES, Cost, register_cost


@register_cost("adversarial_distill")
def cost(stage, options=None) -> Cost:
    return Cost(forwards_per_sample=TRAIN_PASSES + 1, frozen_copies=("teacher",))  # + the teacher's estimate
