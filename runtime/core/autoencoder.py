"""The autoencoder stage's formulas: its loss terms, the latent normalisation and reconstruction PSNR.

KL(N(mu, sigma^2) || N(0, 1)) = (mu^2 + sigma^2 - 1 - log sigma^2) / 2 per latent element; the stage's KL term
sums it over a latent and divides by the image's element count, so `kl_weight` weighs it against a per-pixel
mean reconstruction error as LDM's 1e-6 weighs its per-image sums.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def kl_term(mean: Tensor, logvar: Tensor, image_elements: int) -> Tensor:
    """mean over the batch of sum over a latent's elements of KL(q(z|x) || N(0, I)), divided by image_elements."""
    kl = 0.5 * (mean.float() ** 2 + logvar.float().exp() - 1.0 - logvar.float())
    return kl.reshape(kl.shape[0], -1).sum(dim=1).mean() / image_elements


def reconstruction_loss(x: Tensor, x_hat: Tensor, kind: str) -> Tensor:
    """Mean absolute (l1) or squared (l2) error over every element."""
    diff = x_hat.float() - x.float()
    return diff.abs().mean() if kind == "l1" else (diff ** 2).mean()


def psnr(x: Tensor, x_hat: Tensor) -> Tensor:
    """Per-image PSNR in dB of images in [-1, 1], measured on [0, 1] pixels: 10 log10(1 / MSE), shape (B,)."""
    a, b = (x.double().clamp(-1, 1) + 1) / 2, (x_hat.double().clamp(-1, 1) + 1) / 2
    mse = ((a - b) ** 2).reshape(len(a), -1).mean(dim=1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-12))


def latent_normalisation(latents: list[Tensor]) -> tuple[float, float]:
    """(scaling_factor, shift_factor): 1 / standard deviation and mean of every element of `latents` (any
    shapes), so that (z - shift) * scale has mean 0 and variance 1 over them (the SD3 convention)."""
    count = sum(z.numel() for z in latents)
    if count < 2:
        raise ValueError("the latent statistics need at least two latent elements")
    total = sum(z.double().sum() for z in latents)
    mean = float(total) / count
    squares = sum(((z.double() - mean) ** 2).sum() for z in latents)
    std = math.sqrt(float(squares) / count)
    if not std > 0:
        raise ValueError("the latents have zero variance: the VAE maps every image to the same latent")
    return 1.0 / std, mean
