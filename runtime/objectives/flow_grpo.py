"""Flow-GRPO (algorithms.md section 6): SDE rollouts in groups, group-relative advantages, the clipped
ratio objective on the first timestep_fraction of steps, KL to the reference (the `from` stage).

The objective lands with issue 13; its cost model is here so `flowspec plan` estimates the stage.
"""
from __future__ import annotations

from .base import TRAIN_PASSES, Cost, register_cost


@register_cost("flow_grpo")
def cost(stage, options=None) -> Cost:
    trained = int(stage.timestep_fraction * stage.sampling_steps)
    cfg = 2 if stage.cfg_scale not in (0.0, 1.0) else 1
    reference = trained if stage.kl_beta > 0 else 0  # one reference forward per trained step for the KL
    return Cost(forwards_per_sample=cfg * (stage.sampling_steps + trained * TRAIN_PASSES + reference),
                frozen_copies=("reference",))
