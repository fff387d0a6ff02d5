"""Op `evaluate`: the built-in evaluation at the end of a stage (EMA weights), by the data's metric."""
from __future__ import annotations

import json

import torch

from ..sampling import generate
from . import op
from .context import StageContext
from .sample import request

EVAL_SAMPLES_2D = 2000
EVAL_CAPTIONS = 64


def evaluate_toy2d(ctx: StageContext) -> dict:
    """Sliced Wasserstein and MMD of generated points to fresh data, next to the data's own floor."""
    from ..data.toy2d import sample_toy2d
    from ..eval.metrics import baseline, mmd_rbf, sliced_wasserstein
    from ..report.plots import scatter_plot

    distribution = ctx.stage.data.source.distribution
    samples = torch.from_numpy(generate(ctx.bundle, ctx.stage.timesteps,
                                        request(ctx, [""], EVAL_SAMPLES_2D, seed=12345, evaluation=True))).float()
    fresh = sample_toy2d(distribution, EVAL_SAMPLES_2D, torch.Generator().manual_seed(777))
    floor = baseline(lambda n, g: sample_toy2d(distribution, n, g), EVAL_SAMPLES_2D, seed=778)
    results = {"sliced_wasserstein": sliced_wasserstein(samples, fresh, generator=torch.Generator().manual_seed(0)),
               "mmd": mmd_rbf(samples, fresh), "data_floor": floor}
    scatter_plot({"data": fresh.numpy(), "samples": samples.numpy()}, ctx.run_dir / "eval_scatter.png",
                 title="final samples vs data")
    return results


def evaluate_shapes(ctx: StageContext) -> dict:
    """Checker accuracy (colour, shape, count, position) of generations for held-out captions; for a
    class-conditional model, for captions of single objects ("a red circle"), the class it is given."""
    from ..data.shapes import eval_captions
    from ..eval.checker import accuracy, attribute_accuracy, chance_accuracy
    from ..report.plots import image_grid

    band = tuple(ctx.stage.data.curriculum[-1].complexity)
    if ctx.classes is not None:
        band = (1, 1)  # a class-conditional model is told a colour and a shape only: one caption per class
    captions = eval_captions(ctx.seed, EVAL_CAPTIONS, band)
    images = generate(ctx.bundle, ctx.stage.timesteps, request(ctx, captions, 1, seed=4321, evaluation=True))
    results = {"checker_accuracy": accuracy(list(images), captions),
               "checker_attributes": attribute_accuracy(list(images), captions),
               "chance": chance_accuracy(band), "complexity": list(band), "num_captions": len(captions)}
    cols = 8
    image_grid(list(images[: cols * 4]), rows=4, cols=cols, path=ctx.run_dir / "eval_samples.png")
    return results


METRICS = {"toy2d": evaluate_toy2d, "shapes_checker": evaluate_shapes}


def reward_on_eval(ctx: StageContext, scorer=None) -> dict:
    """The stage's reward (or `scorer`'s) on fixed prompts and seeds (the evaluation's: 2-D points from the empty prompt,
    held-out captions on shapes, train.samples' prompts otherwise): its mean and std over the items."""
    source = ctx.stage.data.source.kind
    if source == "toy2d":
        prompts, per_prompt = [""], EVAL_SAMPLES_2D
    elif source == "shapes":
        from ..data.shapes import eval_captions

        band = (1, 1) if ctx.classes is not None else tuple(ctx.stage.data.curriculum[-1].complexity)
        prompts, per_prompt = eval_captions(ctx.seed, EVAL_CAPTIONS, band), 1
    else:
        prompts, per_prompt = list(ctx.stage.train.samples.prompts), ctx.stage.train.samples.per_prompt
    out = torch.from_numpy(generate(ctx.bundle, ctx.stage.timesteps, request(ctx, prompts, per_prompt, seed=4321, evaluation=True)))
    items = out.float() if source == "toy2d" else out.permute(0, 3, 1, 2).float() / 127.5 - 1.0
    scores = (scorer or ctx.reward)(items, [p for p in prompts for _ in range(per_prompt)])
    return {"mean": scores.mean().item(), "std": scores.std(unbiased=False).item(), "items": len(scores)}


@op("evaluate", main_only=True)
def evaluate(ctx: StageContext, params: dict) -> None:
    from .train import isolated

    with ctx.weights_for_export():
        results = isolated(METRICS[params["metric"]])(ctx)
        if ctx.reward is not None:
            results["reward"] = isolated(reward_on_eval)(ctx)
            if "reward_start" in ctx.results:
                results["reward_start"] = ctx.results.pop("reward_start")
    (ctx.run_dir / "eval.json").write_text(json.dumps(results, indent=2))
    ctx.results["eval"] = results
