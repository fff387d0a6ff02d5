"""Adversarial diffusion distillation, ADD (algorithms.md section 9.4), in flow form.

The student takes data noised to one of student_timesteps (1.0: pure noise) and gives its clean estimate
x_hat = x_t - t v(x_t, t). Its loss is the hinge generator loss of the discriminator (heads on a frozen feature
network, op `discriminator`) plus distill_weight times the distillation loss: x_hat re-noised to a teacher level
s ~ U(0, 1), denoised by the guided teacher, the squared distance to that estimate weighted by 1 - s (the
data's share of x_s). The discriminator's hinge loss on data against x_hat (plus r1_weight times R1 on the data)
trains its heads in the same backward: the student's terms see the heads' weights detached and the heads' terms
see x_hat detached. The heads learn at discriminator.lr and are checkpointed with the stage.
"""
from __future__ import annotations

import torch

from ..core.distill import hinge_discriminator_loss, hinge_generator_loss, r1_penalty
from ..core.paths import expand_t
from .base import TRAIN_PASSES, Cost, register_objective
from .distill_common import DistillObjective


@register_objective("adversarial_distill")
class AdversarialDistill(DistillObjective):
    def __init__(self, ctx, options=None):
        super().__init__(ctx, options)
        self.discriminator = ctx.discriminator
        self.levels = torch.tensor(self.stage.student_timesteps, dtype=torch.float32)

    # Under sharding: fsdp the discriminator stays whole on every rank (runtime/train/sharding.py).
    replicated = ("discriminator",)

    def modules(self) -> dict:
        return {"discriminator": self.discriminator}

    def learning_rates(self) -> dict[str, float]:
        return {"discriminator": self.stage.discriminator.lr}

    def __call__(self, step: int, micro: int):
        stage = self.stage
        clean = self.clean(step, micro)
        n, rand, x0 = len(clean.x0), clean.rand, clean.x0
        pick = rand.rows(rand.draw("level", lambda total, g: torch.randint(0, len(self.levels), (total,), generator=g)))
        t = self.levels[pick].to(self.device)
        eps = self.noise_like(rand, "noise", n, clean.size)
        x_t = (1 - expand_t(t, x0)) * x0 + expand_t(t, x0) * eps
        x_hat = x_t - expand_t(t, x0) * self.student(clean)(x_t, t)
        distill = self.distillation(clean, x_hat, rand)
        text = self.pooled_text(clean.captions)
        fake_items = self.items(x_hat)
        generator = hinge_generator_loss(self.discriminator.frozen_heads(fake_items, text))
        real_items = self.items(x0).detach().requires_grad_(stage.discriminator.r1_weight > 0)
        real_logits = self.discriminator(real_items, text)
        critic = hinge_discriminator_loss(real_logits, self.discriminator(fake_items.detach(), text))
        r1 = r1_penalty(real_logits, real_items) if stage.discriminator.r1_weight > 0 else real_logits.new_zeros(())
        loss = generator + stage.distill_weight * distill + critic + stage.discriminator.r1_weight * r1
        return loss, {"adv_loss": generator.detach(), "distill_loss": distill.detach(), "disc_loss": critic.detach(),
                      "r1": r1.detach()}

    def distillation(self, clean, x_hat, rand) -> torch.Tensor:
        """(1 - s) ||x_hat - sg(teacher's clean estimate of x_hat noised to s)||^2, per dimension, averaged."""
        n = len(x_hat)
        s = rand.rows(rand.draw("teacher_t", lambda total, g: torch.rand(total, generator=g))).to(self.device)
        eps = self.noise_like(rand, "teacher_noise", n, clean.size)
        with torch.no_grad():
            x_s = (1 - expand_t(s, x_hat)) * x_hat.detach() + expand_t(s, x_hat) * eps
            target = x_s - expand_t(s, x_s) * self.teacher_field(clean, self.stage.teacher_cfg())(x_s, s)
        per_sample = (x_hat - target).flatten(1).pow(2).mean(dim=1)
        return ((1 - s) * per_sample).mean()

    def items(self, x: torch.Tensor) -> torch.Tensor:
        """What the discriminator reads: images in [-1, 1] (decoded latents), or the 2-D points."""
        return x if self.toy else self.bundle.codec.decode(x.float())

    def pooled_text(self, captions: list[str]):
        if self.bundle.text_encoder is None or self.discriminator.project is None:
            return None
        with torch.no_grad():
            return self.bundle.text_encoder(captions).pooled.to(self.device)

    @classmethod
    def cost(cls, stage, options=None) -> Cost:
        cfg = 2 if stage.teacher_cfg() != 1.0 else 1
        return Cost(forwards_per_sample=TRAIN_PASSES + cfg, frozen_copies=("teacher",), teacher_forwards=cfg)
