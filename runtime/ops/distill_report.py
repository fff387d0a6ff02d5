"""Op `distill_report`: every distillation stage compares its student with its teacher on the same prompts and
seeds: the student at 1, 2, 4 steps and its own (train.samples.num_steps) on its nested grid without guidance,
the teacher at 8 steps, its own and the student's own on its grid with the guidance it taught. Quality is the data's metric
(toy2d: sliced W2 and MMD to fresh data, with the data's own floor; shapes: checker accuracy and a Frechet
distance of EfficientNet-lite0 features to renders of the same captions), with NFE (denoiser forwards per
sample) and wall time per sample. Written as distill_report.md (part of the stage's report.md),
distill_report.json and distill_report.png."""
from __future__ import annotations

import dataclasses
import json
import time
from contextlib import nullcontext

import torch

from ..models.lora import adapters_disabled
from ..objectives.distill_common import teacher_stage
from ..sampling import generate
from . import op
from .context import StageContext
from .sample import request

TOY_POINTS = 2000
SHAPES_CAPTIONS = 64


def teacher_sampling(ctx: StageContext) -> dict:
    """How the teacher samples: its stage's steps (a distilled teacher: also its grid and solver), with the
    guidance the stage taught."""
    upstream, distilled = teacher_stage(ctx.spec, ctx.stage)
    samples = (upstream or ctx.stage).train.samples
    return {"steps": samples.num_steps, "grid": "nested" if distilled else "default",
            "solver": samples.solver if distilled else "euler", "cfg_scale": ctx.stage.teacher_cfg()}


def rows(ctx: StageContext) -> list[dict]:
    own = ctx.stage.train.samples.num_steps
    teacher = teacher_sampling(ctx)
    solver = ctx.stage.train.samples.solver
    students = [{"model": "student", "steps": n, "grid": "nested", "solver": solver, "cfg_scale": 1.0}
                for n in sorted({1, 2, 4, own})]
    teachers = [{**teacher, "model": "teacher", "steps": n} for n in sorted({8, teacher["steps"], own})]
    return students + teachers


def measure(ctx: StageContext, row: dict, prompts: list[str], per_prompt: int, score) -> dict:
    wanted = dataclasses.replace(request(ctx, prompts, per_prompt, seed=4321, evaluation=True), num_steps=row["steps"],
                                 grid=row["grid"], solver=row["solver"], cfg_scale=row["cfg_scale"])
    bundle = ctx.teacher if row["model"] == "teacher" and ctx.teacher is not None else ctx.bundle
    off = adapters_disabled(ctx.bundle) if row["model"] == "teacher" and ctx.teacher is None else nullcontext()
    weights = ctx.weights_for_export() if row["model"] == "student" else nullcontext()
    with weights, off:
        start = time.perf_counter()
        out = generate(bundle, ctx.stage.timesteps, wanted)
        seconds = time.perf_counter() - start
    guided = row["cfg_scale"] != 1.0 and not ctx.toy
    return {**row, "nfe": row["steps"] * (2 if guided else 1), "seconds_per_sample": seconds / len(out), **score(out)}


def toy_scorer(ctx: StageContext):
    from ..data.toy2d import sample_toy2d
    from ..eval.metrics import baseline, mmd_rbf, sliced_wasserstein

    distribution = ctx.stage.data.source.distribution
    fresh = sample_toy2d(distribution, TOY_POINTS, torch.Generator().manual_seed(777))
    floor = baseline(lambda n, g: sample_toy2d(distribution, n, g), TOY_POINTS, seed=778)

    def score(out) -> dict:
        points = torch.from_numpy(out).float()
        return {"sliced_wasserstein": sliced_wasserstein(points, fresh, generator=torch.Generator().manual_seed(0)),
                "mmd": mmd_rbf(points, fresh)}

    return [""], TOY_POINTS, score, {"data_floor": floor}


def shapes_scorer(ctx: StageContext):
    """Captions of fresh scenes of the last phase's band (the same for every stage of the spec); the checker on
    them, and the Frechet distance of the frozen EfficientNet-lite0's pooled features to the scenes' renders
    (left out when its wheel is missing)."""
    from ..data.shapes import make_scene, render
    from ..eval.checker import accuracy
    from ..eval.metrics import frechet_distance

    phase = ctx.stage.data.curriculum[-1]
    band = (1, 1) if ctx.classes is not None else tuple(phase.complexity)
    scenes = [make_scene(ctx.spec.seed + 1, 10**6 + i, band) for i in range(SHAPES_CAPTIONS)]  # one set per spec
    captions = [scene.caption for scene in scenes]
    encoder, extra = feature_encoder()
    real = None

    def features(images) -> torch.Tensor:
        items = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        return encoder.patch_features(items).mean(dim=1)

    def score(out) -> dict:
        nonlocal real
        result = {"checker_accuracy": accuracy(list(out), captions)}
        if encoder is not None:
            if real is None:
                import numpy as np

                h, w = out.shape[1:3]
                real = features(np.stack([render(scene, h, w) for scene in scenes]))
            result["frechet_effnet"] = frechet_distance(features(out), real)
        return result

    return captions, 1, score, extra


def feature_encoder():
    from ..models.vision import EfficientNetLite0

    try:
        return EfficientNetLite0(), {}
    except ImportError as exc:
        return None, {"frechet_effnet": f"left out: {exc}"}


SCORERS = {"toy2d": toy_scorer, "shapes": shapes_scorer}


@op("distill_report", main_only=True)
def distill_report(ctx: StageContext, params: dict) -> None:
    from .train import isolated

    isolated(write_report)(ctx)


def write_report(ctx: StageContext) -> None:
    make = SCORERS.get(ctx.stage.data.source.kind)
    if make is None:
        prompts, per_prompt, extra = list(ctx.stage.train.samples.prompts), 1, {"quality": "no metric for this data"}
        score = lambda out: {}  # noqa: E731 - NFE and time alone
    else:
        prompts, per_prompt, score, extra = make(ctx)
    table = [measure(ctx, row, prompts, per_prompt, score) for row in rows(ctx)]
    if ctx.coupling is not None:
        from .reflow import probe_straightness

        with ctx.weights_for_export():
            extra["straightness"] = {"start": ctx.results.get("straightness_start"),
                                     "student": probe_straightness(ctx, ctx.coupling)}
    report = {"stage": ctx.stage.name, "kind": ctx.stage.kind, "rows": table, **extra}
    (ctx.run_dir / "distill_report.json").write_text(json.dumps(report, indent=2))
    (ctx.run_dir / "distill_report.md").write_text(markdown(report))  # the stage's report.md includes it
    plot(table, ctx.run_dir / "distill_report.png", ctx.stage.name)
    ctx.results["distill_report"] = report
    print(f"[{ctx.label}] distillation report: {ctx.run_dir / 'distill_report.md'}", flush=True)


QUALITY = ("sliced_wasserstein", "mmd", "checker_accuracy", "frechet_effnet")


def markdown(report: dict) -> str:
    keys = [k for k in QUALITY if any(k in row for row in report["rows"])]
    lines = [f"# Distillation report: {report['stage']} ({report['kind']})", "",
             "| model | steps | grid | solver | cfg | NFE | s / sample | " + " | ".join(keys) + " |",
             "|---" * (7 + len(keys)) + "|"]
    for row in report["rows"]:
        values = " | ".join(f"{row[k]:.4g}" if k in row else "" for k in keys)
        lines.append(f"| {row['model']} | {row['steps']} | {row['grid']} | {row['solver']} | {row['cfg_scale']:g} | "
                     f"{row['nfe']} | {row['seconds_per_sample']:.3g} | {values} |")
    for key in ("data_floor", "straightness", "frechet_effnet", "quality"):
        if key in report:
            lines += ["", f"{key}: {json.dumps(report[key])}"]
    return "\n".join(lines) + "\n"


def plot(table: list[dict], path, title: str) -> None:
    """Quality against NFE, one line for the student and one for the teacher."""
    from ..report.plots import line_plot

    key = next((k for k in QUALITY if k in table[0]), None)
    if key is None:
        return
    series = {}
    for model in ("student", "teacher"):
        points = sorted((r["nfe"], r[key]) for r in table if r["model"] == model)
        series[model] = ([p[0] for p in points], [p[1] for p in points])
    line_plot(series, path, title=f"{title}: {key} against NFE", xlabel="NFE (denoiser forwards per sample)", ylabel=key)
