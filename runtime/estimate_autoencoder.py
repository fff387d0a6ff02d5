"""The estimate of an autoencoder stage: its VAE's parameters, FLOPs and memory, measured on the meta device as
runtime/estimate.py measures a denoiser (an encode and a decode per sample, a backward counted as two forwards)."""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..compiler.plan import Estimate
from ..schemas.hardware import ACCELERATORS
from .objectives.base import TRAIN_PASSES

GIB = 2**30
ADAM_BYTES = 8


def vae_forward(vae, resolution: int) -> tuple[float, float]:
    """(FLOPs, bytes saved for the backward) of encoding and decoding one resolution x resolution image."""
    saved = []

    def pack(tensor):
        saved.append(tensor.numel() * tensor.element_size())
        return tensor

    x = torch.zeros(1, 3, resolution, resolution, device="meta")
    with FlopCounterMode(display=False) as counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        posterior = vae.encode(x).latent_dist
        vae.decode(posterior.mean + posterior.std).sample
    return float(counter.get_total_flops()), float(sum(saved))


def autoencoder_estimate(spec, stage) -> Estimate:
    from .models.build import build_vae

    vae = build_vae(spec.model.latent, device="meta")
    params = sum(p.numel() for p in vae.parameters())
    phases, train = stage.data.curriculum, stage.train
    costs = {p.resolution: vae_forward(vae, p.resolution) for p in phases}
    flops = 0.0
    for j, phase in enumerate(phases):
        end = phases[j + 1].at_step if j + 1 < len(phases) else stage.steps
        flops += max(end - phase.at_step, 0) * train.global_batch * costs[phase.resolution][0] * TRAIN_PASSES
    executor, devices = stage.executor, stage.executor.num_devices()
    accel = ACCELERATORS[executor.gpu]
    micro = train.micro_batch or train.global_batch // devices
    bf16 = train.precision == "bf16" or (train.precision == "auto" and executor.gpu != "cpu")
    activations = max(c[1] for c in costs.values()) * micro * (0.5 if bf16 else 1.0)
    states = (8 + ADAM_BYTES + (4 if train.ema else 0)) * params
    memory = (states + activations) * 1.1 / GIB
    seconds = flops / (accel.peak_tflops * 1e12 * executor.mfu) / devices
    notes = [f"trains the VAE ({params:,} parameters) on the data; no denoiser is built"]
    if stage.perceptual_weight > 0:  # two feature passes per sample, a fraction of a percent of the VAE's
        notes.append("the perceptual term's frozen EfficientNet-lite0 (4.65M parameters) is not counted")
    if memory > accel.memory_gib:
        notes.append(f"estimated {memory:.1f} GiB per device exceeds the {accel.memory_gib:.0f} GiB of a {executor.gpu}: "
                     "lower train.micro_batch")
    return Estimate(params_total=params, params_trainable=params, train_flops=flops, memory_gib=memory,
                    gpu_hours=seconds * devices / 3600, accelerator=executor.gpu, devices=devices,
                    step_seconds=seconds / stage.steps, notes=tuple(notes))
