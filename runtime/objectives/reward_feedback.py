"""Reward feedback learning, ReFL (algorithms.md section 5): an ODE rollout (Euler, guided as the stage's
samples are) without gradient down to a late step j drawn from grad_steps, one step with gradient whose
one-shot prediction x0_hat = x_t - t v is decoded and scored (with backprop_steps K > 1, the gradient flows
through the K steps ending at j: truncated backpropagation, DRaFT-K when j is the last step), and

    L = grad_scale * mean(ReLU(reward_margin - r(x0_hat, prompt))) + pretrain_loss_weight * FM(real data)

The rollout's prompts are the captions of the stage's data batch (rewritten by the stage's prompt enhancer,
if any, for the model; the reward reads the captions), whose images feed the flow-matching term; the noise and j are functions of (seed, step, place in the global batch), as every draw.
"""
from __future__ import annotations

import torch

from ..core.randomness import SliceRandom
from ..core.solvers import euler_step
from ..sampling import grid_for, guided_velocity, latent_shape
from .base import TRAIN_PASSES, Cost, register_objective
from .flow_matching import FlowMatching

ROLLOUT_STREAM = 0x5EF1  # the rollout's draws come from their own seed


@register_objective("reward_feedback")
class RewardFeedback(FlowMatching):
    def __init__(self, ctx, options=None):
        super().__init__(ctx, options)
        self.stage, self.scorer, self.enhancer = ctx.stage, ctx.reward, ctx.enhancer
        self.cfg_scale = ctx.stage.train.samples.cfg_scale
        self.toy = ctx.bundle.denoiser.spec.kind == "mlp"

    def __call__(self, step: int, micro: int):
        batch = self.feed.batch(step, micro)
        loss, metrics = self.reward_loss(batch, step)
        if self.stage.pretrain_loss_weight > 0:
            fm, fm_metrics = self.loss_on(batch, step, self.seed)
            metrics.update(fm_metrics, fm_loss=fm.detach())
            loss = loss + self.stage.pretrain_loss_weight * fm
        return loss, metrics

    def reward_loss(self, batch, step: int):
        stage, n = self.stage, len(batch.x)
        rand = SliceRandom((self.seed + ROLLOUT_STREAM) % 2**63, step, batch.offset, n, batch.total or n)
        noise = rand.randn("rollout", latent_shape(self.bundle, n, batch.height, batch.width)).to(self.device)
        lo, hi = stage.grad_steps
        j = int(rand.draw("grad_step", lambda total, g: torch.randint(lo, hi + 1, (), generator=g)))
        size = None if self.toy else (batch.height, batch.width)
        labels = batch.class_labels.to(self.device) if batch.class_labels is not None else None
        given = self.enhancer(list(batch.captions), self.seed + step) if self.enhancer else batch.captions
        velocity = guided_velocity(self.bundle, given, labels, size, self.cfg_scale)  # scored on the captions
        sigmas = grid_for(self.bundle, stage.timesteps, stage.sampling_steps, batch.height, batch.width).tolist()
        x, first = noise, j + 1 - stage.backprop_steps  # steps first..j carry gradient
        with torch.no_grad():
            for i in range(first):
                x = euler_step(velocity, x, sigmas[i], sigmas[i + 1])
        for i in range(first, j):
            x = euler_step(velocity, x, sigmas[i], sigmas[i + 1])
        t = sigmas[j]
        x0_hat = x - t * velocity(x, torch.full((n,), t, device=x.device))
        items = x0_hat if self.toy else self.bundle.codec.decode(x0_hat.float()).clamp(-1, 1)
        reward = self.scorer(items, list(batch.captions), grad=True)
        loss = stage.grad_scale * torch.relu(stage.reward_margin - reward).mean()
        return loss, {"phase": batch.phase, "resolution": batch.height, "reward": reward.detach().mean(),
                      "reward_loss": loss.detach(), "grad_step": j}

    @classmethod
    def cost(cls, stage, options=None) -> Cost:
        lo, hi = stage.grad_steps
        cfg = 2 if stage.train.samples.cfg_scale != 1.0 else 1  # guided: one forward of each condition
        graded = stage.backprop_steps  # forwards with gradient, ending at the drawn step
        rollout = (lo + hi) / 2 + 1 - graded  # forwards without gradient before them, on average
        real_data = TRAIN_PASSES if stage.pretrain_loss_weight > 0 else 0.0
        return Cost(forwards_per_sample=cfg * (rollout + graded * TRAIN_PASSES) + real_data)
