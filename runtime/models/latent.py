"""The space the denoiser works in: pixels (or 2-D points) as they are, or a frozen VAE's latents."""
from __future__ import annotations

import torch
from torch import nn


class PixelCodec(nn.Module):
    factor = 1

    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
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

    @torch.no_grad()
    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        posterior = self.vae.encode(x.to(self.vae.dtype)).latent_dist
        noise = torch.randn(posterior.mean.shape, generator=generator, dtype=posterior.mean.dtype)
        z = posterior.mean + posterior.std * noise.to(posterior.mean.device)
        return ((z - self.shift) * self.scale).float()

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode((z / self.scale + self.shift).to(self.vae.dtype)).sample.float()


def build_codec(latent_spec, device=None) -> nn.Module:
    if latent_spec.kind == "pixel":
        return PixelCodec()
    from diffusers import AutoencoderKL

    if latent_spec.path:
        vae = AutoencoderKL.from_pretrained(latent_spec.path)
    else:
        vae = AutoencoderKL(**latent_spec.config())
    return VAECodec(vae.to(device or "cpu"))
