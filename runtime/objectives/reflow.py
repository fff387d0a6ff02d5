"""Reflow / InstaFlow (algorithms.md section 9.2): flow matching on the fixed coupling of (noise, teacher
sample) pairs that the teacher's guided ODE made (op generate_pairs), so the learned paths straighten and few
Euler steps suffice. With one_step the student trains at t = 1 only: its single Euler step from the noise
is pulled onto the teacher's sample, InstaFlow's distillation step (after a reflow stage, as its teacher).

Rows read the pairs in runtime/data/pair_order.py's order (every pair once per epoch, in an order drawn per
epoch), as Diffusion-DPO reads its pairs.
"""
from __future__ import annotations

import torch

from ..core import LinearPath, TimestepDistribution, flow_matching_loss
from ..core.randomness import SliceRandom
from ..data.pair_order import PairOrder
from ..models.conditioning import make_condition
from .base import TRAIN_PASSES, Cost, register_objective
from .distill_common import DistillObjective, final_size


@register_objective("reflow")
class Reflow(DistillObjective):
    def __init__(self, ctx, options=None):
        super().__init__(ctx, options)
        self.coupling, self.batch = ctx.coupling, ctx.stage.train.global_batch
        micro = self.batch // (ctx.accumulation * ctx.dist.world)
        self.order = PairOrder(len(self.coupling), self.seed, "reflow_pairs", self.batch, micro, ctx.dist)
        self.timesteps = TimestepDistribution.from_spec(ctx.stage.timesteps)
        self.size = final_size(ctx.stage, ctx.bundle)

    def __call__(self, step: int, micro: int):
        offset, index = self.order.rows(step, micro)
        n = len(index)
        rand = SliceRandom(self.seed, step, offset, n, self.batch)
        eps, x0 = self.coupling.noise[index].to(self.device), self.coupling.samples[index].to(self.device)
        if self.stage.one_step:
            t, weight = torch.ones(n, device=self.device), torch.ones(n, device=self.device)
        else:
            height, width = self.size or (0, 0)
            seq_len = max(height // self.multiple, 1) * max(width // self.multiple, 1)
            draw = rand.draw("t", lambda total, g: self.timesteps.draw(total, g, height, width, seq_len))
            t, weight = rand.rows(draw.t).to(self.device), rand.rows(draw.weight).to(self.device)
        sample = LinearPath().sample(x0, eps, t)
        captions = [self.coupling.captions[i] for i in index]
        labels = torch.tensor(self.classes.labels(captions)) if self.classes is not None else None
        cond = make_condition(self.bundle, captions, labels, self.size)
        v = self.bundle.denoiser.velocity(sample.x_t, t, cond)
        return flow_matching_loss(v.float(), sample.velocity.float(), weight), {}

    @classmethod
    def cost(cls, stage, options=None) -> Cost:
        cfg = 2 if stage.teacher_cfg() != 1.0 else 1
        return Cost(forwards_per_sample=TRAIN_PASSES, one_off_forwards=stage.num_pairs * stage.teacher_steps * cfg,
                    frozen_copies=("teacher",))
