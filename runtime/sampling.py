"""Generate images (or 2-D points) from a model bundle: ODE on the shifted grid, with guidance."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..schemas.buckets import bucket_sides
from .core import cfg_velocity, sample_ode, shift_from_spec
from .models.bundle import ModelBundle
from .models.offload import execution_device
from .models.conditioning import empty_condition, make_condition


@dataclass(frozen=True)
class SampleRequest:
    prompts: tuple[str, ...]
    per_prompt: int = 1
    seed: int = 0
    num_steps: int = 28
    solver: str = "euler"
    cfg_scale: float = 1.0
    resolution: int = 64
    aspect_ratio: float = 1.0
    class_labels: tuple[int, ...] | None = None  # one per prompt, for class-conditional models
    grid: str = "default"  # "nested": a distilled student's grid (core/shifts.py nested_sigmas)


def latent_multiple(bundle: ModelBundle) -> int:
    return bundle.codec.factor * bundle.denoiser.spec.patch_factor()


def latent_shape(bundle: ModelBundle, n: int, height: int, width: int) -> tuple[int, ...]:
    """The shape of n starting noises: (n, C) for 2-D points, (n, C, h, w) at the codec's scale for images."""
    channels = bundle.denoiser.spec.latent_channels_expected()
    if bundle.denoiser.spec.kind == "mlp":
        return (n, channels)
    return (n, channels, height // bundle.codec.factor, width // bundle.codec.factor)


def grid_for(bundle: ModelBundle, timesteps_block, num_steps: int, height: int, width: int,
             grid: str = "default") -> torch.Tensor:
    """The inference sigmas, shifted for this size as training was (resolution-aware or Flux dynamic); the
    diffusers grid, or with grid "nested" the shifted uniform grid a distilled student was trained on."""
    multiple = latent_multiple(bundle)
    seq_len = max(height // multiple, 1) * max(width // multiple, 1)
    shift = shift_from_spec(timesteps_block.shift)
    if grid == "nested":
        return shift.nested_sigmas(num_steps, height, width, seq_len)
    return shift.inference_sigmas(num_steps, height, width, seq_len)


def guided_velocity(bundle: ModelBundle, captions: list[str], labels: torch.Tensor | None,
                    size: tuple[int, int] | None, cfg_scale: float):
    """v(x, t) of the conditioned model, guided (one batched forward of conditional and empty condition)
    when cfg_scale is not 1 and the model has a condition to drop."""
    cond = make_condition(bundle, captions, labels, size)
    guided = cfg_scale != 1.0 and (cond.text is not None or cond.class_labels is not None)
    both = type(cond).cat(cond, empty_condition(bundle, len(captions), size)) if guided else cond

    def velocity(x, t):
        if not guided:
            return bundle.denoiser.velocity(x, t, cond).float()
        v = bundle.denoiser.velocity(torch.cat([x, x]), torch.cat([t, t]), both).float()
        v_cond, v_uncond = v.chunk(2)
        return cfg_velocity(v_cond, v_uncond, cfg_scale)

    return velocity


@torch.no_grad()
def generate(bundle: ModelBundle, timesteps_block, request: SampleRequest) -> np.ndarray:
    """uint8 images (N, H, W, 3), or float points (N, 2) for the MLP; N = prompts x per_prompt, prompt-major."""
    device = execution_device(bundle.denoiser)
    toy = bundle.denoiser.spec.kind == "mlp"
    captions = [p for p in request.prompts for _ in range(request.per_prompt)]
    n = len(captions)
    height, width = (0, 0) if toy else bucket_sides(request.resolution, request.aspect_ratio, latent_multiple(bundle))
    noise = torch.randn(latent_shape(bundle, n, height, width), generator=torch.Generator().manual_seed(request.seed))
    labels = None
    if request.class_labels is not None:
        labels = torch.tensor([c for c in request.class_labels for _ in range(request.per_prompt)])
    size = None if toy else (height, width)
    velocity = guided_velocity(bundle, captions, labels, size, request.cfg_scale)
    sigmas = grid_for(bundle, timesteps_block, request.num_steps, height, width, request.grid).to(device)
    fresh = torch.Generator().manual_seed(request.seed + 1)  # the consistency solver's re-noising

    def renoise(i, shape):
        return torch.randn(shape, generator=fresh).to(device)

    was_training = bundle.denoiser.training
    bundle.denoiser.eval()
    try:
        x0 = sample_ode(velocity, noise.to(device), sigmas, solver=request.solver, renoise=renoise)
    finally:
        bundle.denoiser.train(was_training)
    if toy:
        return x0.cpu().numpy()
    images = bundle.codec.decode(x0).clamp(-1, 1)
    return ((images + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
