"""The autoencoder stage's objective: reconstruction + KL (+ perceptual) loss of the VAE it trains.

    L = rec(x, D(z)) + kl_weight KL(q(z|x) || N(0, I)) / (3 H W) + perceptual_weight |phi(x) - phi(D(z))|^2

with z = mu + sigma eps a sample of the posterior (runtime/core/autoencoder.py for each term).
"""
from __future__ import annotations

import torch

from ..core.autoencoder import kl_term, reconstruction_loss
from ..core.device import to_device
from ..core.randomness import SliceRandom
from .base import Objective, register_objective


@register_objective("autoencoder")
class AutoencoderObjective(Objective):
    def __init__(self, ctx, options=None):
        super().__init__(ctx, options)
        stage = ctx.stage
        self.vae, self.feed, self.device, self.seed = ctx.autoencoder, ctx.feed, ctx.device, ctx.seed
        self.kind, self.kl_weight, self.perceptual_weight = stage.reconstruction, stage.kl_weight, stage.perceptual_weight
        self.features = None
        if self.perceptual_weight > 0:
            from ..models.vision import EfficientNetLite0

            self.features = EfficientNetLite0().to(ctx.device)

    def modules(self):
        return {"vae": self.vae}

    def __call__(self, step: int, micro: int):
        batch = self.feed.batch(step, micro)
        n = len(batch.x)
        rand = SliceRandom(self.seed, step, batch.offset, n, batch.total or n)
        x = to_device(batch.x, self.device)
        posterior = self.vae.encode(x).latent_dist
        eps = to_device(rand.randn("posterior", posterior.mean.shape), self.device)
        x_hat = self.vae.decode(posterior.mean + posterior.std * eps).sample
        rec = reconstruction_loss(x, x_hat, self.kind)
        kl = kl_term(posterior.mean, posterior.logvar, x[0].numel())
        loss = rec + self.kl_weight * kl
        metrics = {"reconstruction": rec.detach(), "kl": kl.detach()}
        if self.features is not None:
            perceptual = perceptual_distance(self.features, x, x_hat)
            loss = loss + self.perceptual_weight * perceptual
            metrics["perceptual"] = perceptual.detach()
        return loss, metrics


def perceptual_distance(features, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the frozen encoder's feature maps of the image and its reconstruction (the
    gradient reaches x_hat through the frozen weights)."""
    grid = features.grid_for(*x.shape[-2:])
    target = features.patch_features(x, grid)
    return ((features.patch_features(x_hat, grid, grad=True) - target) ** 2).mean()
