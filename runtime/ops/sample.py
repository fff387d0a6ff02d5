"""Op `sample`: the stage's sample grid at its fixed prompts and seeds (also drawn during training)."""
from __future__ import annotations

from ..sampling import SampleRequest, generate
from . import op
from .context import StageContext


def request(ctx: StageContext, prompts, per_prompt: int, seed: int) -> SampleRequest:
    samples, phase = ctx.stage.train.samples, ctx.stage.data.curriculum[-1]
    labels = ctx.classes.labels(prompts) if ctx.classes is not None else None
    return SampleRequest(prompts=tuple(prompts), per_prompt=per_prompt, seed=seed, num_steps=samples.num_steps,
                         solver=samples.solver, cfg_scale=samples.cfg_scale, resolution=phase.resolution,
                         class_labels=labels)


def sample_grid(ctx: StageContext, step: int) -> None:
    from ..report.plots import image_grid, scatter_plot

    samples = ctx.stage.train.samples
    folder = ctx.run_dir / "samples"
    folder.mkdir(exist_ok=True)
    with ctx.weights_for_export():
        out = generate(ctx.bundle, ctx.stage.timesteps, request(ctx, samples.prompts, samples.per_prompt, samples.seed))
    path = folder / f"step-{step:08d}.png"
    if ctx.toy:
        data = ctx.stream.toy.batch(10**9, len(out)).numpy()
        scatter_plot({"data": data, "samples": out}, path, title=f"step {step}")
    else:
        image_grid(list(out), rows=len(samples.prompts), cols=samples.per_prompt, path=path,
                   row_labels=list(samples.prompts))
    ctx.log_image("samples", path, step)
    rows = ctx.stage.validation_prompts_grid()
    if rows:
        with ctx.weights_for_export():
            out = generate(ctx.bundle, ctx.stage.timesteps, request(ctx, rows, samples.per_prompt, samples.seed))
        path = folder / f"subject-step-{step:08d}.png"
        image_grid(list(out), rows=len(rows), cols=samples.per_prompt, path=path, row_labels=list(rows))
        ctx.log_image("subject", path, step)


@op("sample", main_only=True)
def sample(ctx: StageContext, params: dict) -> None:
    from .train import isolated

    isolated(sample_grid)(ctx, ctx.trainer.step if ctx.trainer is not None else ctx.stage.steps)
