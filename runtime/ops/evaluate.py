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
                                        request(ctx, [""], EVAL_SAMPLES_2D, seed=12345))).float()
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
    images = generate(ctx.bundle, ctx.stage.timesteps, request(ctx, captions, 1, seed=4321))
    results = {"checker_accuracy": accuracy(list(images), captions),
               "checker_attributes": attribute_accuracy(list(images), captions),
               "chance": chance_accuracy(band), "complexity": list(band), "num_captions": len(captions)}
    cols = 8
    image_grid(list(images[: cols * 4]), rows=4, cols=cols, path=ctx.run_dir / "eval_samples.png")
    return results


METRICS = {"toy2d": evaluate_toy2d, "shapes_checker": evaluate_shapes}


@op("evaluate", main_only=True)
def evaluate(ctx: StageContext, params: dict) -> None:
    from .train import isolated

    with ctx.weights_for_export():
        results = isolated(METRICS[params["metric"]])(ctx)
    (ctx.run_dir / "eval.json").write_text(json.dumps(results, indent=2))
    ctx.results["eval"] = results
