"""Distribution matching distillation, DMD2 (algorithms.md section 9, DMD / DMD2), in flow form.

A generator (the student, initialised from the start) maps noise to x_hat in one step (student_timesteps
[1.0]) or a few: for a later level it first runs itself, without autograd, from noise to that level (DMD2's
backward simulation), so training sees what sampling sees. A 'fake' score model, a trained copy of the start,
learns the generator's current distribution by flow matching on its detached samples; the 'real' score is the
frozen teacher guided at cfg_scale. The generator's update follows the distribution-matching gradient
(core/distill.py dmd_gradient) on x_hat re-noised to t ~ U(t_range).

Two time scales: of every fake_updates + 1 optimizer steps, the first fake_updates train the fake model and
the last the generator (each with the loop's optimizer, the fake model at its own fake_lr). With gan_weight > 0,
a head on the fake model's pooled output features (x_t - v: its clean estimate) classifies noised data against
noised generator samples (non-saturating), trained with the fake model, and the generator adds
gan_weight times its non-saturating loss.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..core import TimestepDistribution, per_sample_loss
from ..core.distill import dmd_gradient, dmd_loss
from ..core.paths import expand_t
from ..models.conditioning import make_condition
from ..models.lora import has_lora
from .base import TRAIN_PASSES, Cost, register_objective
from .distill_common import DistillObjective


class FakeScore(nn.Module):
    """The fake score model's denoiser and, with a GAN term, its classifier head."""

    def __init__(self, denoiser: nn.Module, gan: bool, width: int):
        super().__init__()
        self.denoiser = denoiser
        self.head = nn.Sequential(nn.Linear(width, 128), nn.SiLU(), nn.Linear(128, 1)) if gan else None

    def velocity(self, x_t, t, cond) -> torch.Tensor:
        """The fake model's velocity, called on this module (under sharding: fsdp it gathers the weights)."""
        return self.denoiser.velocity(x_t, t, cond)

    def forward(self, x_t, t, cond) -> torch.Tensor:
        """The GAN logit of noised items: the head on the pooled clean estimate of the fake model."""
        clean = x_t - expand_t(t, x_t) * self.denoiser.velocity(x_t, t, cond).float()
        pooled = clean.flatten(2).mean(-1) if clean.dim() > 2 else clean
        return self.head(pooled).squeeze(-1)


@register_objective("distribution_matching")
class DistributionMatching(DistillObjective):
    def __init__(self, ctx, options=None):
        super().__init__(ctx, options)
        stage = self.stage
        denoiser = copy.deepcopy(ctx.bundle.denoiser)
        if not has_lora(ctx.bundle):
            denoiser.requires_grad_(True)
        width = ctx.bundle.denoiser.spec.latent_channels_expected()
        self.fake = FakeScore(denoiser, stage.gan_weight > 0, width).to(ctx.device)
        self.timesteps = TimestepDistribution.from_spec(stage.timesteps)
        self.levels = list(stage.student_timesteps)

    def modules(self) -> dict:
        return {"fake_score": self.fake}

    def learning_rates(self) -> dict[str, float]:
        return {"fake_score": self.stage.fake_lr}

    def generator_step(self, step: int) -> bool:
        return step % (self.stage.fake_updates + 1) == self.stage.fake_updates

    def __call__(self, step: int, micro: int):
        clean = self.clean(step, micro)
        if self.generator_step(step):
            return self.generator_loss(clean)
        return self.fake_loss(clean)

    def generate(self, clean, grad: bool) -> torch.Tensor:
        """x_hat from noise: without autograd down to a drawn level, then one step of the generator there."""
        rand, n = clean.rand, len(clean.x0)
        pick = rand.rows(rand.draw("level", lambda total, g: torch.randint(0, len(self.levels), (total,), generator=g)))
        field = self.student(clean)
        x = self.noise_like(rand, "noise", n, clean.size)
        with torch.no_grad():
            for k in range(1, int(pick.max()) + 1):  # rows past level k re-noise their estimate to it
                t = torch.full((n,), self.levels[k - 1], device=self.device)
                estimate = x - expand_t(t, x) * field(x, t)
                fresh = self.noise_like(rand, f"level_noise_{k}", n, clean.size)
                x_k = (1 - self.levels[k]) * estimate + self.levels[k] * fresh
                later = (pick >= k).to(self.device).view(-1, *[1] * (x.dim() - 1))
                x = torch.where(later, x_k, x)
        t = torch.tensor([self.levels[i] for i in pick.tolist()], device=self.device)
        with torch.set_grad_enabled(grad):
            return x - expand_t(t, x) * field(x, t)

    def generator_loss(self, clean):
        stage, rand = self.stage, clean.rand
        x_hat = self.generate(clean, grad=True)
        low, high = stage.t_range
        t = low + (high - low) * rand.rows(rand.draw("dmd_t", lambda total, g: torch.rand(total, generator=g)))
        t = t.to(self.device)
        x_t = (1 - expand_t(t, x_hat)) * x_hat.detach() + expand_t(t, x_hat) * self.noise_like(rand, "dmd_noise", len(t), clean.size)
        cond = self.condition(clean)
        with torch.no_grad():
            fake = x_t - expand_t(t, x_t) * self.fake.velocity(x_t, t, cond).float()
            real = x_t - expand_t(t, x_t) * self.teacher_field(clean, stage.teacher_cfg())(x_t, t)
        loss = dmd_loss(x_hat, dmd_gradient(x_hat, fake, real))
        metrics = {"update": "generator", "dmd_loss": loss.detach()}
        if stage.gan_weight > 0:
            noised = (1 - expand_t(t, x_hat)) * x_hat + expand_t(t, x_hat) * self.noise_like(rand, "gan_noise", len(t), clean.size)
            frozen = {k: v.detach() for k, v in self.fake.named_parameters()}
            logits = torch.func.functional_call(self.fake, frozen, (noised, t, cond), strict=False)
            gan = F.softplus(-logits).mean()
            loss = loss + stage.gan_weight * gan
            metrics["gan_loss"] = gan.detach()
        return loss, metrics

    def fake_loss(self, clean):
        rand, n = clean.rand, len(clean.x0)
        x_hat = self.generate(clean, grad=False)
        height, width = clean.size or (0, 0)
        seq_len = max(height // self.multiple, 1) * max(width // self.multiple, 1)
        draw = rand.draw("fake_t", lambda total, g: self.timesteps.draw(total, g, height, width, seq_len))
        t = rand.rows(draw.t).to(self.device)
        eps = self.noise_like(rand, "fake_noise", n, clean.size)
        x_t = (1 - expand_t(t, x_hat)) * x_hat + expand_t(t, x_hat) * eps
        cond = self.condition(clean)
        loss = per_sample_loss(self.fake.velocity(x_t, t, cond).float(), eps - x_hat).mean()
        metrics = {"update": "fake", "fake_loss": loss.detach()}
        if self.stage.gan_weight > 0:
            real_t = (1 - expand_t(t, clean.x0)) * clean.x0 + expand_t(t, clean.x0) * eps
            critic = F.softplus(-self.fake(real_t, t, cond)).mean() + F.softplus(self.fake(x_t, t, cond)).mean()
            loss = loss + critic
            metrics["critic_loss"] = critic.detach()
        return loss, metrics

    def condition(self, clean):
        """The condition the fake model reads: the student's text encoder, not trained by the fake's loss."""
        with torch.no_grad():
            return make_condition(self.bundle, clean.captions, clean.labels, clean.size)

    @classmethod
    def cost(cls, stage, options=None) -> Cost:
        cfg = 2 if stage.teacher_cfg() != 1.0 else 1
        k = stage.fake_updates
        generator = TRAIN_PASSES + 1 + cfg  # the generator's step and backward, the fake and real scores
        fake = 1 + TRAIN_PASSES  # a sample of the generator, the fake model's step and backward
        return Cost(forwards_per_sample=(generator + k * fake) / (k + 1), frozen_copies=("teacher",), trained_copies=1,
                    teacher_forwards=cfg / (k + 1))
