"""Ops of the autoencoder stage: build the VAE, draw reconstructions and measure PSNR, compute the latent
normalisation from the data, export a diffusers AutoencoderKL folder (runtime/objectives/autoencoder.py trains it).

The grids and the PSNR use images after the last training step's (the stream's batches past `steps`); the latent
statistics use the first training batches' images, the distribution the denoiser stages will see.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..core.autoencoder import latent_normalisation, psnr
from ..core.device import to_device
from . import op
from .context import StageContext

GRID_COLUMNS = 8


@op("load_autoencoder")
def load_autoencoder(ctx: StageContext, params: dict) -> None:
    """The VAE in model.latent's preset shape: seeded random weights, or the weights `from` names."""
    from diffusers import AutoencoderKL

    from ..models.bundle import single_threaded

    start = ctx.stage.from_
    if start is None:
        torch.manual_seed(ctx.seed)
        with single_threaded():
            vae = AutoencoderKL(**ctx.spec.model.latent.config())
    else:
        folder = Path(start) if "/" in start else Path(ctx.plan.stage(start).run_dir) / "model"
        if not (folder / "config.json").is_file():
            raise RuntimeError(f"stage '{ctx.stage.name}' starts from {folder}, which holds no AutoencoderKL "
                               "(no config.json)")
        vae = AutoencoderKL.from_pretrained(str(folder))
        ctx.base = str(folder.resolve())
    ctx.autoencoder = vae.to(ctx.device).train()


def held_out(ctx: StageContext, count: int, first_step: int):
    """Up to `count` images (B, 3, H, W) in [-1, 1] from the stream's batches from `first_step` on, as a list
    of same-size batches."""
    batches, found, step = [], 0, first_step
    while found < count:
        for micro in range(ctx.accumulation):
            x = ctx.stream.batch(step, micro).x[:count - found]
            batches.append(x)
            found += len(x)
            if found >= count:
                break
        step += 1
    return batches


@torch.no_grad()
def reconstruct(vae, x: torch.Tensor, device) -> torch.Tensor:
    """D(mean of q(z|x)): the deterministic reconstruction."""
    return vae.decode(vae.encode(to_device(x, device)).latent_dist.mean).sample.float().cpu()


def _pixels(x: torch.Tensor) -> list[np.ndarray]:
    return list(((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())


def reconstruction_grid(ctx: StageContext, step: int) -> None:
    """Originals over their reconstructions, GRID_COLUMNS of each (the stage's grid during and after training)."""
    from ..report.plots import image_grid

    x = held_out(ctx, GRID_COLUMNS, ctx.stage.steps)[0]
    with ctx.weights_for_export():
        was = ctx.autoencoder.training
        x_hat = reconstruct(ctx.autoencoder.eval(), x, ctx.device)
        ctx.autoencoder.train(was)
    folder = ctx.run_dir / "samples"
    folder.mkdir(exist_ok=True)
    path = folder / f"step-{step:08d}.png"
    image_grid(_pixels(x) + _pixels(x_hat), rows=2, cols=len(x), path=path, row_labels=["data", "reconstructed"])
    ctx.log_image("samples", path, step)


@op("reconstruct", main_only=True)
def reconstruct_op(ctx: StageContext, params: dict) -> None:
    """The final grid, and the reconstruction PSNR of `eval_images` images (mean over images, in dB)."""
    from .train import isolated

    isolated(reconstruction_grid)(ctx, ctx.stage.steps)
    values = []
    with ctx.weights_for_export():
        ctx.autoencoder.eval()
        for x in held_out(ctx, params["images"], ctx.stage.steps):
            values.append(psnr(x, reconstruct(ctx.autoencoder, x, ctx.device)))
    values = torch.cat(values)
    ctx.results["eval"] = {"psnr_db": round(float(values.mean()), 3), "psnr_db_min": round(float(values.min()), 3),
                           "images": len(values)}
    print(f"[{ctx.label}] reconstruction PSNR {values.mean():.2f} dB over {len(values)} images (min "
          f"{values.min():.2f})", flush=True)


@op("latent_stats", main_only=True)
def latent_stats(ctx: StageContext, params: dict) -> None:
    """shift_factor and scaling_factor from posterior samples of `stats_images` training images (seeded), with
    the weights the stage exports."""
    generator = torch.Generator().manual_seed(ctx.seed)
    latents = []
    with ctx.weights_for_export(), torch.no_grad():
        vae = ctx.autoencoder.eval()
        for x in held_out(ctx, params["images"], 0):
            posterior = vae.encode(to_device(x, ctx.device)).latent_dist
            eps = torch.randn(posterior.mean.shape, generator=generator).to(posterior.mean.device)
            latents.append((posterior.mean + posterior.std * eps).float().cpu())
    scale, shift = latent_normalisation(latents)
    ctx.results["latent"] = {"scaling_factor": scale, "shift_factor": shift, "images": sum(len(z) for z in latents)}
    print(f"[{ctx.label}] latent normalisation over {ctx.results['latent']['images']} images: shift_factor "
          f"{shift:.4g}, scaling_factor {scale:.4g}", flush=True)


@op("export_autoencoder", main_only=True)
def export_autoencoder(ctx: StageContext, params: dict) -> None:
    """A diffusers AutoencoderKL folder (AutoencoderKL.from_pretrained loads it) with the latent normalisation
    in its config."""
    folder = ctx.run_dir / "model"
    with ctx.weights_for_export():
        vae = ctx.autoencoder
        latent = ctx.results["latent"]  # latent_stats' measure
        vae.register_to_config(scaling_factor=latent["scaling_factor"], shift_factor=latent["shift_factor"])
        vae.save_pretrained(str(folder))
    (folder / "flowspec.json").write_text(json.dumps({"stage": ctx.stage.name, **ctx.results.get("eval", {})},
                                                     indent=2))
