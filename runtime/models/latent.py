"""The space the denoiser works in: pixels (or 2-D points) as they are, or a frozen VAE's latents."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn

# Standard normal noise of a given shape: a seeded generator's draws, or a micro-batch's rows of its
# global batch's draws (runtime/core/randomness.SliceRandom.randn).
Noise = Callable[[torch.Size], torch.Tensor]


def generator_noise(generator: torch.Generator | None) -> Noise:
    return lambda shape: torch.randn(shape, generator=generator)


class PixelCodec(nn.Module):
    factor = 1
    cache = None

    def encode(self, x: torch.Tensor, noise: Noise | None = None, keys=None) -> torch.Tensor:
        return x

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z


class VAECodec(nn.Module):
    """z = (sample of q(z|x) - shift) * scale, the diffusers convention for SD/SDXL/SD3/Flux VAEs."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae.requires_grad_(False).eval()
        config = vae.config
        self.scale = float(config.scaling_factor)
        self.shift = float(config.shift_factor or 0.0)
        self.factor = 2 ** (len(config.block_out_channels) - 1)
        self.cache = None  # a ContentCache of posteriors, set when data.cache.latents is on
        self._fingerprint: str | None = None

    def fingerprint(self) -> str:
        """The VAE's identity and weights, one ingredient of every cached latent's key."""
        if self._fingerprint is None:
            from ..data.cache import module_fingerprint

            self._fingerprint = module_fingerprint(self.vae, dict(self.vae.config))
        return self._fingerprint

    @torch.no_grad()
    def posterior(self, x: torch.Tensor, keys: list[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) of q(z|x), read from the cache where `keys` name items already encoded."""
        if self.cache is None or keys is None:
            dist = self.vae.encode(x.to(self.vae.dtype)).latent_dist
            return dist.mean.float(), dist.std.float()
        from ..data.cache import content_key

        full = [content_key(item=k, vae=self.fingerprint(), dtype=str(self.vae.dtype)) for k in keys]
        found = [self.cache.get(k) for k in full]
        missing = [i for i, entry in enumerate(found) if entry is None]
        if missing:
            dist = self.vae.encode(x[missing].to(self.vae.dtype)).latent_dist
            for j, i in enumerate(missing):
                found[i] = {"mean": dist.mean[j].float(), "std": dist.std[j].float()}
                self.cache.put(full[i], found[i])
        device = x.device
        return (torch.stack([f["mean"] for f in found]).to(device), torch.stack([f["std"] for f in found]).to(device))

    @torch.no_grad()
    def encode(self, x: torch.Tensor, noise: Noise | None = None, keys: list[str] | None = None) -> torch.Tensor:
        # The posterior is cached, not a sample: the noise is drawn here either way, so a cached run
        # and an uncached one give the same latents.
        mean, std = self.posterior(x, keys)
        draw = (noise or generator_noise(None))(mean.shape).to(mean.device, mean.dtype)
        return ((mean + std * draw - self.shift) * self.scale).float()

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode((z / self.scale + self.shift).to(self.vae.dtype)).sample.float()


def build_codec(latent_spec, device=None) -> nn.Module:
    if latent_spec.kind == "pixel":
        return PixelCodec()
    from diffusers import AutoencoderKL

    if latent_spec.from_ is not None and not (Path(latent_spec.path or "") / "config.json").is_file():
        raise RuntimeError(f"the latent space is the VAE autoencoder stage '{latent_spec.from_}' trains, which has "
                           f"not finished (no {latent_spec.path}): run that stage first")
    if latent_spec.path:
        vae = AutoencoderKL.from_pretrained(latent_spec.path)
    else:
        vae = AutoencoderKL(**latent_spec.config())
    return VAECodec(vae.to(device or "cpu"))


def untrained(model_spec):
    """The model spec with a VAE an autoencoder stage would train (model.latent.from) replaced by a random one of
    the same shape: what a benchmark of data or step speed builds without training the VAE first."""
    latent = model_spec.latent
    if latent.kind != "vae" or latent.from_ is None:
        return model_spec
    return model_spec.model_copy(update={"latent": latent.model_copy(update={"from_": None, "path": None})})
