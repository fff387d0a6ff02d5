"""Flow matching on the stage's data: the objective of pretrain and finetune (algorithms.md sections 1-2).

    L = E_t,eps [ w(t) |v(x_t, t, c) - (eps - x0)|^2 ] + sum_k lambda_k L_REPA,k

w(t) is the timestep sampler's importance weight; the condition c is dropped with probability
train.cfg_dropout (classifier-free guidance). Subclasses change the per-sample weighting through
`weighting(t)` (examples/custom_stage shows one).
"""
from __future__ import annotations

import torch

from ..core import LinearPath, TimestepDistribution, condition_dropout_mask, flow_matching_loss
from ..core.device import to_device
from ..core.randomness import SliceRandom
from ..models.conditioning import make_condition
from ..sampling import latent_multiple
from .base import TRAIN_PASSES, Cost, Objective, register_objective


@register_objective("flow_matching")
class FlowMatching(Objective):
    def __init__(self, ctx, options=None):
        super().__init__(ctx, options)
        self.bundle, self.feed, self.device, self.seed = ctx.bundle, ctx.feed, ctx.device, ctx.seed
        self.timesteps = TimestepDistribution.from_spec(ctx.stage.timesteps)
        self.cfg_dropout = ctx.stage.train.cfg_dropout
        self.repa = list(ctx.repa)
        self.path = LinearPath()
        self.multiple = latent_multiple(ctx.bundle) if ctx.bundle.denoiser.spec.kind != "mlp" else 1

    def weighting(self, t: torch.Tensor) -> torch.Tensor | None:
        """Extra per-sample loss weight, on top of the sampler's importance weight; None: none (1)."""
        return None

    def __call__(self, step: int, micro: int):
        return self.loss_on(self.feed.batch(step, micro), step, self.seed)

    def loss_on(self, batch, step: int, seed: int):
        """The flow-matching loss of one batch, its draws a function of (seed, step, rows of the global batch)."""
        n = len(batch.x)
        # Draws depend on an item's place in the global batch, not on ranks x accumulation.
        rand = SliceRandom(seed, step, batch.offset, n, batch.total or n)
        x0 = self.bundle.codec.encode(to_device(batch.x, self.device), lambda shape: rand.randn("posterior", shape),
                                      batch.keys)
        eps = to_device(rand.randn("noise", x0.shape), self.device)
        seq_len = max(batch.height // self.multiple, 1) * max(batch.width // self.multiple, 1)
        draw = rand.draw("t", lambda total, g: self.timesteps.draw(total, g, batch.height, batch.width, seq_len))
        t = to_device(rand.rows(draw.t), self.device)
        weight = self.loss_weight(t, draw.weight, rand)
        drop = None  # cfg_dropout 0 (toys, unconditional data) draws nothing
        if self.cfg_dropout > 0:
            drop = rand.rows(rand.draw("dropout", lambda total, g: condition_dropout_mask(total, self.cfg_dropout, g)))
        sample = self.path.sample(x0, eps, t)
        size = (batch.height, batch.width) if batch.height else None
        cond = make_condition(self.bundle, batch.captions, batch.class_labels, size, drop)
        v = self.bundle.denoiser.velocity(sample.x_t, t, cond)
        loss = flow_matching_loss(v.float(), sample.velocity.float(), weight)
        metrics = {"phase": batch.phase, "resolution": batch.height}
        if self.repa:
            metrics["fm_loss"] = loss.detach()
            loss = loss + self._repa_terms(batch, x0, metrics)
        return loss, metrics

    def loss_weight(self, t: torch.Tensor, sampler_weight: torch.Tensor, rand: SliceRandom) -> torch.Tensor | None:
        """The timestep sampler's weight times `weighting(t)`; None when both are 1 (no multiply at all)."""
        extra = self.weighting(t)
        if self.timesteps.loss_weighting == "none":
            return extra
        weight = to_device(rand.rows(sampler_weight), self.device)
        return weight if extra is None else weight * extra

    def _repa_terms(self, batch, x0, metrics: dict) -> torch.Tensor:
        """Each REPA term reads the block output of the forward just run and aligns it with the clean
        image's encoder features (cached by content when data.cache.repa_targets is set)."""
        clean, (lh, lw) = batch.x.to(self.device), x0.shape[-2:]
        total = 0.0
        for k, repa in enumerate(self.repa):
            target = grid = None
            if repa.cache is not None and batch.keys is not None:
                target, grid = repa.cached_targets(clean, batch.keys, lh, lw, repa.cache)
            total = total + repa(clean, lh, lw, target=target, target_grid=grid)
            metrics["repa_loss" if k == 0 else f"repa_loss_{k}"] = repa.last_value
        return total

    def modules(self) -> dict:
        return {("repa_projector" if k == 0 else f"repa_projector_{k}"): repa for k, repa in enumerate(self.repa)}

    @classmethod
    def cost(cls, stage, options=None) -> Cost:
        return Cost(forwards_per_sample=TRAIN_PASSES)
