"""Diffusion-DPO in flow form (algorithms.md section 7): for each preference pair, the winner and the loser
are noised with the same t and the same noise; the velocity errors of the policy and of the frozen
reference give the loss of runtime/core/dpo.py. Rows read their pairs in
runtime/data/pair_order.py's order: every pair once per epoch, in an order drawn per epoch.
Logged: the implicit accuracy (pairs with inner > 0) and the reward margin (the mean inner term).
"""
from __future__ import annotations

import torch

from ..core import LinearPath, TimestepDistribution, per_sample_loss
from ..core.dpo import dpo_loss
from ..core.randomness import SliceRandom
from ..data.pair_order import PairOrder
from ..models.conditioning import make_condition
from ..models.lora import adapters_disabled
from ..sampling import latent_multiple
from .base import TRAIN_PASSES, Cost, Objective, register_objective


@register_objective("diffusion_dpo")
class DiffusionDPO(Objective):
    def __init__(self, ctx, options=None):
        super().__init__(ctx, options)
        self.bundle, self.pairs, self.reference = ctx.bundle, ctx.pairs, ctx.reference
        self.device, self.seed, self.dist, self.classes = ctx.device, ctx.seed, ctx.dist, ctx.classes
        self.beta, self.batch = ctx.stage.beta, ctx.stage.train.global_batch
        self.micro = self.batch // (ctx.accumulation * ctx.dist.world)
        self.timesteps = TimestepDistribution.from_spec(ctx.stage.timesteps)
        self.path = LinearPath()
        self.toy = ctx.bundle.denoiser.spec.kind == "mlp"
        self.multiple = 1 if self.toy else latent_multiple(ctx.bundle)
        self.order = PairOrder(len(self.pairs), self.seed, "dpo_pairs", self.batch, self.micro, ctx.dist)

    def __call__(self, step: int, micro: int):
        offset, index = self.order.rows(step, micro)
        n = len(index)
        rand = SliceRandom(self.seed, step, offset, n, self.batch)
        winners, losers = (x[index].to(self.device) for x in (self.pairs.winners, self.pairs.losers))
        x0 = torch.cat([self.encode(winners, rand, "posterior_w"), self.encode(losers, rand, "posterior_l")])
        eps = rand.randn("noise", x0[:n].shape).to(self.device).repeat(2, *[1] * (x0.dim() - 1))  # shared
        height, width = (0, 0) if self.toy else winners.shape[-2:]
        seq_len = max(height // self.multiple, 1) * max(width // self.multiple, 1)
        draw = rand.draw("t", lambda total, g: self.timesteps.draw(total, g, height, width, seq_len))
        t = rand.rows(draw.t).to(self.device).repeat(2)  # shared by the two images of a pair
        sample = self.path.sample(x0, eps, t)
        captions = [self.pairs.captions[i] for i in index] * 2
        labels = torch.tensor(self.classes.labels(captions)) if self.classes is not None else None
        cond = make_condition(self.bundle, captions, labels, None if self.toy else (height, width))
        errors = self.errors(self.bundle, sample, t, cond)
        with torch.no_grad():
            if self.reference is None:  # the start with its LoRA switched off
                with adapters_disabled(self.bundle):
                    reference = self.errors(self.bundle, sample, t, cond)
            else:
                ref_cond = make_condition(self.reference, captions, labels, None if self.toy else (height, width))
                reference = self.errors(self.reference, sample, t, ref_cond)
        loss, inner = dpo_loss(errors[:n], errors[n:], reference[:n], reference[n:], self.beta)
        return loss, {"implicit_accuracy": (inner > 0).float().mean(), "reward_margin": inner.detach().mean()}

    def encode(self, x, rand: SliceRandom, name: str):
        return self.bundle.codec.encode(x, lambda shape: rand.randn(name, shape))

    def errors(self, bundle, sample, t, cond):
        v = bundle.denoiser.velocity(sample.x_t, t, cond)
        return per_sample_loss(v.float(), sample.velocity.float())

    @classmethod
    def cost(cls, stage, options=None) -> Cost:
        one_off = 0.0
        if stage.pairs.kind == "generated":
            cfg = 2 if stage.train.samples.cfg_scale != 1.0 else 1
            one_off = stage.pairs.num_pairs * 2 * stage.pairs.sampling_steps * cfg
        # per pair: the policy's forward and backward on two images, the reference's forward on both
        return Cost(forwards_per_sample=2 * TRAIN_PASSES + 2, one_off_forwards=one_off, frozen_copies=("reference",))
