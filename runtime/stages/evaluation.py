"""Built-in evaluation at the end of a stage, and what it leaves in the stage folder."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..sampling import generate
from ..train.logs import METRICS

EVAL_SAMPLES_2D = 2000
EVAL_CAPTIONS = 64


def evaluate_toy2d(runner) -> dict:
    """Sliced Wasserstein and MMD of generated points to fresh data, next to the data's own floor."""
    from ..data.toy2d import sample_toy2d
    from ..eval.metrics import baseline, mmd_rbf, sliced_wasserstein
    from ..report.plots import scatter_plot

    distribution = runner.stage.data.source.distribution
    samples = torch.from_numpy(generate(runner.bundle, runner.stage.timesteps,
                                        runner.request([""], EVAL_SAMPLES_2D, seed=12345))).float()
    fresh = sample_toy2d(distribution, EVAL_SAMPLES_2D, torch.Generator().manual_seed(777))
    floor = baseline(lambda n, g: sample_toy2d(distribution, n, g), EVAL_SAMPLES_2D, seed=778)
    results = {"sliced_wasserstein": sliced_wasserstein(samples, fresh, generator=torch.Generator().manual_seed(0)),
               "mmd": mmd_rbf(samples, fresh), "data_floor": floor}
    scatter_plot({"data": fresh.numpy(), "samples": samples.numpy()}, runner.run_dir / "eval_scatter.png",
                 title="final samples vs data")
    (runner.run_dir / "eval.json").write_text(json.dumps(results, indent=2))
    return {"eval": results}


def evaluate_shapes(runner) -> dict:
    """Checker accuracy (colour, shape, count, position) of generations for held-out captions."""
    from ..data.shapes import eval_captions
    from ..eval.checker import accuracy, attribute_accuracy, chance_accuracy
    from ..report.plots import image_grid

    band = tuple(runner.stage.data.curriculum[-1].complexity)
    captions = eval_captions(runner.stage_plan.seed, EVAL_CAPTIONS, band)
    images = generate(runner.bundle, runner.stage.timesteps, runner.request(captions, 1, seed=4321))
    results = {"checker_accuracy": accuracy(list(images), captions),
               "checker_attributes": attribute_accuracy(list(images), captions),
               "chance": chance_accuracy(band), "complexity": list(band), "num_captions": len(captions)}
    cols = 8
    image_grid(list(images[: cols * 4]), rows=4, cols=cols, path=runner.run_dir / "eval_samples.png")
    (runner.run_dir / "eval.json").write_text(json.dumps(results, indent=2))
    return {"eval": results}


def loss_plot(run_dir: Path) -> None:
    from ..report.plots import line_plot

    path = run_dir / METRICS
    if not path.exists():
        return
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if records:
        steps = [r["step"] for r in records]
        line_plot({"loss": (steps, [r["loss"] for r in records])}, run_dir / "loss.png", title="training loss",
                  xlabel="step", ylabel="loss", log_y=True)


def write_report(run_dir: Path, summary: dict) -> None:
    lines = [f"# {summary['stage']} ({summary['kind']})", "", f"- hash: `{summary['hash']}`",
             f"- steps: {summary['steps']}", f"- wall time: {summary['seconds']} s"]
    for key, value in (summary.get("eval") or {}).items():
        lines.append(f"- {key}: {value}")
    lines += ["", "![loss](loss.png)", ""]
    samples = sorted((run_dir / "samples").glob("*.png"))
    if samples:
        lines += [f"![samples]({samples[-1].relative_to(run_dir)})", ""]
    for extra in ("eval_samples.png", "eval_scatter.png"):
        if (run_dir / extra).exists():
            lines += [f"![{extra}]({extra})", ""]
    (run_dir / "report.md").write_text("\n".join(lines))
