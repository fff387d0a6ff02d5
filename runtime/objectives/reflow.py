"""Reflow / InstaFlow (algorithms.md section 9.2): flow matching on the fixed coupling of (noise, teacher
sample) pairs that the teacher's guided ODE made (op generate_pairs), so the learned paths straighten and few
Euler steps suffice. With one_step the student trains at t = 1 only: its single Euler step from the noise
is pulled onto the teacher's sample, InstaFlow's distillation step (after a reflow stage, as its teacher).

Row i of step s's global batch of B is pair perm_e[(s B + i) mod N], e = (s B + i) // N (every pair once per
epoch, in an order drawn per epoch), as Diffusion-DPO reads its pairs.
"""
from __future__ import annotations

import torch

from ..core import LinearPath, TimestepDistribution, flow_matching_loss
from ..core.randomness import SliceRandom, stream_seed
from ..models.conditioning import make_condition
from .base import TRAIN_PASSES, Cost, register_objective
from .distill_common import DistillObjective


@register_objective("reflow")
class Reflow(DistillObjective):
    def __init__(self, ctx, options=None):
        super().__init__(ctx, options)
        self.coupling, self.batch = ctx.coupling, ctx.stage.train.global_batch
        self.micro = self.batch // (ctx.accumulation * ctx.dist.world)
        self.timesteps = TimestepDistribution.from_spec(ctx.stage.timesteps)
        self.size = self.final_size()
        self.orders: dict[int, torch.Tensor] = {}

    def rows(self, step: int, micro: int) -> tuple[int, list[int]]:
        offset = (micro * self.dist.world + self.dist.rank) * self.micro  # the data stream's slice order
        places = [step * self.batch + offset + i for i in range(self.micro)]
        n = len(self.coupling)
        return offset, [int(self.order(p // n)[p % n]) for p in places]

    def order(self, epoch: int) -> torch.Tensor:
        if epoch not in self.orders:
            generator = torch.Generator().manual_seed(stream_seed(self.seed, epoch, "reflow_pairs"))
            self.orders = {epoch: torch.randperm(len(self.coupling), generator=generator)}
        return self.orders[epoch]

    def __call__(self, step: int, micro: int):
        offset, index = self.rows(step, micro)
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
