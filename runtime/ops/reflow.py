"""Op `generate_pairs`: reflow's (noise, teacher sample) coupling (runtime/data/coupling.py), made by the frozen
teacher's guided ODE from the first num_pairs captions of the stage's data, at its last phase's resolution.
It also measures the straightness of the start's field on a fixed probe (the distillation report measures
the student's on the same probe after training)."""
from __future__ import annotations

from pathlib import Path

import torch

from ..core import sample_ode
from ..core.distill import straightness
from ..core.randomness import stream_seed
from ..data.coupling import COUPLING_CACHE, Coupling, coupling_key, make_coupling
from ..objectives.distill_common import Teacher, eval_mode, final_size, teacher_stage
from ..sampling import grid_for, latent_shape
from . import op
from .context import StageContext
from .enhance import data_prompts

PROBE = 64  # pairs whose noise and captions the straightness is measured on


@op("generate_pairs")
def generate_pairs(ctx: StageContext, params: dict) -> None:
    stage = ctx.stage
    prompts = data_prompts(ctx, stage.num_pairs)
    size = final_size(stage, ctx.bundle)
    height, width = size or (0, 0)
    grid = "nested" if teacher_stage(ctx.spec, stage)[1] else "default"  # a distilled teacher: its own grid
    sigmas = grid_for(ctx.bundle, stage.timesteps, stage.teacher_steps, height, width, grid).to(ctx.device)
    teacher = Teacher(ctx.bundle, ctx.teacher)
    identity = {"teacher": ctx.teacher_hash, "prompts": prompts, "seed": ctx.seed, "steps": stage.teacher_steps,
                "cfg_scale": stage.teacher_cfg(), "grid": grid, "size": size,
                "shift": stage.timesteps.shift.model_dump(mode="json")}
    folder = Path(stage.data.cache.dir) / COUPLING_CACHE / coupling_key(identity)

    def solve(chunk: list[str], index: int):
        generator = torch.Generator().manual_seed(stream_seed(ctx.seed, index, "reflow_noise"))
        noise = torch.randn(latent_shape(ctx.bundle, len(chunk), height, width), generator=generator).to(ctx.device)
        field = teacher.field(chunk, labels(ctx, chunk), size, stage.teacher_cfg())
        return noise, sample_ode(field, noise, sigmas)

    ctx.coupling = make_coupling(folder, prompts, solve, ctx.dist.rank, ctx.dist.world, ctx.dist.barrier,
                                 log=lambda line: print(f"[{ctx.label}] {line}", flush=True))
    ctx.results["straightness_start"] = probe_straightness(ctx, ctx.coupling)
    if ctx.dist.main:
        print(f"[{ctx.label}] straightness of the start's field: {ctx.results['straightness_start']:.4g}", flush=True)


def labels(ctx: StageContext, captions: list[str]):
    if ctx.classes is None:
        return None
    return torch.tensor(ctx.classes.labels(captions), device=ctx.device)


def probe_straightness(ctx: StageContext, coupling: Coupling, steps: int = 16) -> float:
    """Straightness (core/distill.py) of the student's own field, unguided, on the first PROBE pairs' noise."""
    from ..models.conditioning import make_condition

    n = min(PROBE, len(coupling))
    size = final_size(ctx.stage, ctx.bundle)
    height, width = size or (0, 0)
    captions = coupling.captions[:n]
    cond = make_condition(ctx.bundle, captions, labels(ctx, captions), size)
    sigmas = grid_for(ctx.bundle, ctx.stage.timesteps, steps, height, width, "nested").to(ctx.device)
    denoiser = ctx.bundle.denoiser
    with torch.no_grad(), eval_mode(ctx.bundle):
        return straightness(lambda x, t: denoiser.velocity(x, t, cond).float(), coupling.noise[:n].to(ctx.device),
                            sigmas)
