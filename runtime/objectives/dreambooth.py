"""DreamBooth (algorithms.md section 4): flow matching on the subject's images with the rare identifier,
plus prior preservation on class images generated once by the frozen starting model.

The objective lands with issue 12; its cost model is here so `flowspec plan` estimates the stage.
"""
from __future__ import annotations

from .base import TRAIN_PASSES, Cost, register_cost

CFG_PASSES = 2  # the class images are sampled with guidance: conditional and unconditional forwards


@register_cost("dreambooth")
def cost(stage, options=None) -> Cost:
    prior = stage.prior
    one_off = prior.num_images * prior.sampling_steps * CFG_PASSES if prior is not None else 0.0
    return Cost(forwards_per_sample=TRAIN_PASSES, one_off_forwards=one_off)
