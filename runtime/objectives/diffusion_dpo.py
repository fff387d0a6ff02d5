"""Diffusion-DPO in flow form (algorithms.md section 7): winner and loser share t and noise; the loss is
-log sigmoid(-beta/2 (policy error margin - reference error margin)).

The objective lands with issue 13; its cost model is here so `flowspec plan` estimates the stage.
"""
from __future__ import annotations

from .base import TRAIN_PASSES, Cost, register_cost

CFG_PASSES = 2  # generated pairs are sampled with guidance


@register_cost("diffusion_dpo")
def cost(stage, options=None) -> Cost:
    one_off = 0.0
    if stage.pairs.kind == "generated":
        one_off = 2 * stage.pairs.num_pairs * stage.pairs.sampling_steps * CFG_PASSES  # two images per pair
    # winner and loser through the policy (with backward) and through the frozen reference
    return Cost(forwards_per_sample=2 * TRAIN_PASSES + 2, one_off_forwards=one_off, frozen_copies=("reference",))
