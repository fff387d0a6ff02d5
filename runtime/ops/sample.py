"""Op `sample`: the stage's sample grid at its fixed prompts and seeds (also drawn during training)."""
from __future__ import annotations

from ..sampling import SampleRequest, generate
from . import op
from .context import StageContext
from .enhance import conditioning


def request(ctx: StageContext, prompts, per_prompt: int, seed: int, evaluation: bool = False) -> SampleRequest:
    """Samples as train.samples draws them; for the evaluation, with the stage's own eval_steps where it
    has them (Flow-GRPO trains on few SDE steps and is judged on many ODE steps); a distilled student on its
    own grid, without guidance (the stage's `sampling()`). Under a prompt enhancer
    the model is given the rewritten prompts; labels, class labels and scores keep the original ones."""
    samples, phase = ctx.stage.train.samples, ctx.stage.data.curriculum[-1]
    labels = ctx.classes.labels(prompts) if ctx.classes is not None else None
    steps = getattr(ctx.stage, "eval_steps", None) if evaluation else None
    given = conditioning(ctx, prompts)  # what the model reads; scores and labels read `prompts`
    return SampleRequest(prompts=tuple(given), per_prompt=per_prompt, seed=seed, num_steps=steps or samples.num_steps,
                         solver=samples.solver, resolution=phase.resolution, class_labels=labels,
                         **{"cfg_scale": samples.cfg_scale, **ctx.stage.sampling()})


def sample_grid(ctx: StageContext, step: int) -> None:
    """train.samples' grid (a scatter plot for 2-D data) and, for a kind that draws one, its second grid."""
    from ..report.plots import scatter_plot

    samples = ctx.stage.train.samples
    folder = ctx.run_dir / "samples"
    folder.mkdir(exist_ok=True)
    path = folder / f"step-{step:08d}.png"
    if ctx.toy:
        out = _generate(ctx, samples.prompts)
        data = ctx.stream.toy.batch(10**9, len(out)).numpy()
        scatter_plot({"data": data, "samples": out}, path, title=f"step {step}")
        ctx.log_image("samples", path, step)
    else:
        _draw(ctx, samples.prompts, path, "samples", step)
    rows = ctx.stage.validation_prompts_grid()
    if rows:
        _draw(ctx, rows, folder / f"subject-step-{step:08d}.png", "subject", step)


def _generate(ctx: StageContext, prompts):
    samples = ctx.stage.train.samples
    with ctx.weights_for_export():
        return generate(ctx.bundle, ctx.stage.timesteps, request(ctx, prompts, samples.per_prompt, samples.seed))


def _draw(ctx: StageContext, prompts, path, name: str, step: int) -> None:
    """One row per prompt, train.samples.per_prompt images each, logged under `name`."""
    from ..report.plots import image_grid

    image_grid(list(_generate(ctx, prompts)), rows=len(prompts), cols=ctx.stage.train.samples.per_prompt, path=path,
               row_labels=list(prompts))
    ctx.log_image(name, path, step)


@op("sample", main_only=True)
def sample(ctx: StageContext, params: dict) -> None:
    from .train import isolated

    isolated(sample_grid)(ctx, ctx.trainer.step if ctx.trainer is not None else ctx.stage.steps)
