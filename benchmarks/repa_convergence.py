"""REPA on the shapes data: the same small MMDiT trained with and without REPA, from the same seed.

    python benchmarks/repa_convergence.py [--steps 600] [--every 50] [--out repa.json]

Every `--every` steps both runs are scored on a fixed held-out set: the flow-matching loss at 8 fixed
noise levels with fixed noise (validation loss, lower is better). The report gives, for the loss the
baseline reaches at its last evaluation, the steps each run needed to reach it, and their ratio
(> 1 means REPA got there faster), plus the checker accuracy of both at the end.
"""
import argparse
import json
import tempfile
from pathlib import Path

import torch

from flowspec.compiler import compile_spec
from flowspec.runtime.core import LinearPath, flow_matching_loss
from flowspec.runtime.data.cache import ContentCache
from flowspec.runtime.data.stream import BatchStream
from flowspec.runtime.models.bundle import build_bundle
from flowspec.runtime.models.conditioning import make_condition
from flowspec.runtime.models.repa import RepaLoss
from flowspec.runtime.objectives.flow_matching import FlowMatching
from flowspec.runtime.ops.context import StageContext
from flowspec.runtime.sampling import SampleRequest, generate, latent_multiple
from flowspec.runtime.train.checkpoint import capture_rng, restore_rng
from flowspec.runtime.train.loop import LoopConfig, LoopHooks, Trainer

SPEC = """
flowspec: 1
name: repa_bench
seed: 11
model:
  kind: mmdit
  preset: tiny
  config: {in_channels: 3, out_channels: 3, sample_size: 32, patch_size: 4, num_layers: 4,
           num_attention_heads: 4, attention_head_dim: 32, caption_projection_dim: 128}
  latent: {kind: pixel}
  text_encoder: {kind: builtin, num_layers: 1, max_tokens: 16}
data:
  source: {kind: shapes, num_images: 512}
  curriculum: [{at_step: 0, resolution: 32, complexity: [1, 2]}]
optimizer: {kind: adamw, lr: 1.0e-3, schedule: {kind: constant, warmup_steps: 50}}
train: {global_batch: 32, cfg_dropout: 0.1}
stages:
  - name: pretrain
    kind: pretrain
    steps: 600
    aux_losses: [{kind: repa, encoder: {kind: efficientnet_lite0}, depth: 1, lambda: 0.5, projector_dim: 256}]
"""


def validation_set(stage, seed: int, multiple: int, n_batches: int = 4):
    """Held-out images (another seed), 8 noise levels, fixed noise: the same numbers for both runs."""
    stream = BatchStream(stage.data, seed + 999, 32, 1, multiple)
    batches = [stream.batch(10_000 + i, 0) for i in range(n_batches)]  # 4 x 32 images x 8 levels
    g = torch.Generator().manual_seed(5)
    return [(b, torch.randn(b.x.shape, generator=g)) for b in batches]


@torch.no_grad()
def validation_loss(bundle, held_out) -> float:
    path, total = LinearPath(), []
    for batch, noise in held_out:
        cond = make_condition(bundle, batch.captions, None, (batch.height, batch.width))
        for t_value in torch.linspace(0.05, 0.95, 8):
            t = torch.full((batch.x.shape[0],), float(t_value))
            sample = path.sample(batch.x, noise, t)
            total.append(float(flow_matching_loss(bundle.denoiser.velocity(sample.x_t, t, cond), sample.velocity)))
    return sum(total) / len(total)


def train(plan, use_repa: bool, steps: int, every: int, cache_dir: str) -> dict:
    spec, stage, seed = plan.spec, plan.spec.stages[0], plan.stages[0].seed
    bundle = build_bundle(spec.model, seed)
    multiple = latent_multiple(bundle)
    stream = BatchStream(stage.data, seed, 32, 1, multiple)
    repa = []
    if use_repa:
        config = spec.model.resolved_config()
        repa = [RepaLoss(stage.aux_losses[0], bundle.denoiser, config["num_attention_heads"] * config["attention_head_dim"])]
        repa[0].cache = ContentCache(cache_dir, "repa")
    objective = FlowMatching(StageContext(stage=stage, seed=0, device=torch.device("cpu"), bundle=bundle, feed=stream,
                                          repa=repa))
    modules = {**bundle.trainable_modules(), **objective.modules()}
    held_out = validation_set(stage, seed, multiple)
    curve = []

    def score(record):
        if record["step"] % every == 0:
            state = capture_rng()
            curve.append((record["step"], validation_loss(bundle, held_out)))
            restore_rng(state)
            print(f"{'repa' if use_repa else 'base'} step {record['step']}: validation loss {curve[-1][1]:.4f}",
                  flush=True)

    with tempfile.TemporaryDirectory() as run_dir:
        config = LoopConfig(steps=steps, accumulation=1, seed=seed, run_dir=Path(run_dir), label="repa" if use_repa
                            else "base", device=torch.device("cpu"), log_every=every, checkpoint_every=10**9,
                            samples_every=10**9)
        Trainer(config, modules, objective, stage.train, stage.optimizer, LoopHooks(on_log=[score])).run()
    from flowspec.runtime.data.shapes import eval_captions
    from flowspec.runtime.eval.checker import accuracy

    captions = eval_captions(seed, 64, (1, 2))
    images = generate(bundle, stage.timesteps, SampleRequest(tuple(captions), 1, 4321, 20, "euler", 3.0, 32))
    return {"curve": curve, "checker_accuracy": accuracy(list(images), captions)}


def steps_to_reach(curve, target: float):
    return next((step for step, value in curve if value <= target), None)


def summarize(base_curve, repa_curve) -> list[dict]:
    """For the validation losses the baseline reaches at 1/3, 2/3 and the end of training: the steps
    each run needs to reach them, and the ratio (> 1: REPA is faster; None: not reached)."""
    rows = []
    for fraction in (1 / 3, 2 / 3, 1.0):
        step, target = base_curve[max(0, round(fraction * len(base_curve)) - 1)]
        base_steps, repa_steps = steps_to_reach(base_curve, target), steps_to_reach(repa_curve, target)
        rows.append({"target": target, "baseline_steps": base_steps, "repa_steps": repa_steps,
                     "ratio": base_steps / repa_steps if repa_steps else None})
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--out", default="repa_convergence.json")
    parser.add_argument("--analyze", help="summarize the curves of an earlier --out file instead of training")
    args = parser.parse_args()
    if args.analyze:
        report(json.loads(Path(args.analyze).read_text()), args.steps)
        return
    with tempfile.TemporaryDirectory() as tmp:
        spec_path = Path(tmp) / "spec.yaml"
        spec_path.write_text(SPEC)
        plan = compile_spec(str(spec_path), None, [f"stages.pretrain.steps={args.steps}"])
        base = train(plan, False, args.steps, args.every, tmp)
        repa = train(plan, True, args.steps, args.every, tmp)
    result = {"baseline": base, "repa": repa, "steps": args.steps}
    Path(args.out).write_text(json.dumps(result, indent=2))
    report(result, args.steps)


def report(result: dict, steps: int) -> None:
    base, repa = result["baseline"], result["repa"]
    for row in summarize(base["curve"], repa["curve"]):
        ratio = f"{row['ratio']:.2f}" if row["ratio"] else "not reached by REPA"
        print(f"validation loss {row['target']:.4f}: baseline at step {row['baseline_steps']}, REPA at step "
              f"{row['repa_steps']} -> ratio {ratio}")
    print(f"checker accuracy at the end: baseline {base['checker_accuracy']:.3f}, REPA {repa['checker_accuracy']:.3f}")


if __name__ == "__main__":
    main()
