"""DreamBooth (algorithms.md section 4): flow matching on the subject's images, captioned with the instance
prompt (which holds the rare identifier), plus prior preservation on class images generated once by the
frozen starting model (the `generate_prior` op):

    L = FM(x_subject, c_instance) + lambda * FM(x_prior, c_class)

Each half has its own draws of t and noise; with lambda = 0 the step is plain fine-tuning on the subject.
"""
from __future__ import annotations

import dataclasses

import torch

from .base import TRAIN_PASSES, Cost, register_objective
from .flow_matching import FlowMatching

CFG_PASSES = 2  # the class images are sampled with guidance: conditional and unconditional forwards
PRIOR_STREAM = 0x9E3779B9  # the prior half's draws come from their own seed


@register_objective("dreambooth")
class DreamBooth(FlowMatching):
    def __init__(self, ctx, options=None):
        super().__init__(ctx, options)
        self.feed = ctx.instance_feed
        prior = ctx.stage.prior
        self.prior_images = ctx.prior_images if prior is not None else None
        self.prior_lambda = prior.lambda_ if prior is not None else 0.0
        self.class_prompt = prior.class_prompt if prior is not None else ""

    def __call__(self, step: int, micro: int):
        batch = self.feed.batch(step, micro)
        loss, metrics = self.loss_on(batch, step, self.seed)
        if self.prior_images is None:
            return loss, metrics
        prior_loss, _ = self.loss_on(self.prior_batch(batch, step), step, (self.seed + PRIOR_STREAM) % 2**63)
        metrics.update(instance_loss=loss.detach(), prior_loss=prior_loss.detach())
        return loss + self.prior_lambda * prior_loss, metrics

    def prior_batch(self, batch, step: int):
        """As many class images as subject images, cycling through them by place in the run: row i of step s's
        global batch of n is image (s * n + i) mod N."""
        n, total = len(batch.x), batch.total or len(batch.x)
        rows = torch.arange(batch.offset, batch.offset + n) + step * total
        images = self.prior_images[rows % len(self.prior_images)]
        return dataclasses.replace(batch, x=images, captions=[self.class_prompt] * n, class_labels=None,
                                   height=images.shape[-2], width=images.shape[-1], keys=None, skipped=[])

    @classmethod
    def cost(cls, stage, options=None) -> Cost:
        prior = stage.prior
        one_off = prior.num_images * prior.sampling_steps * CFG_PASSES if prior is not None else 0.0
        # the prior half is a second forward and backward on as many images
        return Cost(forwards_per_sample=TRAIN_PASSES * (2 if prior is not None else 1), one_off_forwards=one_off)
