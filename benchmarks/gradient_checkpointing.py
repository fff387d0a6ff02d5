"""Peak memory and step time of one training step with model.gradient_checkpointing off and on.

    python benchmarks/gradient_checkpointing.py [--spec specs/sd3_like.yaml --profile smoke] [--batch 8]
                                                 [--resolution 64] [--set KEY=VALUE ...]

The model is built by flowspec's own `load_model` op from the spec (so the key is applied exactly as a
run applies it), then one flow-matching step runs on the spec's data. Each setting runs in a fresh
process. Reported: the activations autograd keeps for the backward (summed by saved-tensor hooks), the
process's peak resident memory above what it held once the model and data were built (CPU), or torch's peak allocated
memory (CUDA), and the median step time over a few steps.
"""
import argparse
import dataclasses
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from flowspec.compiler import compile_spec
from flowspec.runtime.models.latent import untrained
from flowspec.runtime.objectives.flow_matching import FlowMatching
from flowspec.runtime.ops import OPS, StageContext
from flowspec.runtime.train.loop import LoopConfig, Trainer

ROOT = Path(__file__).resolve().parent.parent
MIB = 2**20


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def measure(args, checkpointing: bool) -> dict:
    sets = [*args.set, f"model.gradient_checkpointing={str(checkpointing).lower()}", f"train.global_batch={args.batch}",
            f"train.micro_batch={args.batch}", f"data.curriculum=[{{at_step: 0, resolution: {args.resolution}}}]",
            "executor.devices=1"]
    plan = compile_spec(str(ROOT / args.spec), args.profile, sets)
    # the first denoiser stage, with a random VAE of the shape the spec's autoencoder stage would train
    plan = dataclasses.replace(plan, spec=plan.spec.model_copy(update={"model": untrained(plan.spec.model)}))
    stage_plan = next(s for s in plan.stages if s.kind != "autoencoder")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as run_dir:
        ctx = StageContext(stage=plan.spec_stage(stage_plan.name), seed=0, device=device, plan=plan,
                           stage_plan=stage_plan, run_dir=Path(run_dir))
        OPS["load_model"].run(ctx, {})
        OPS["data"].run(ctx, {})
        objective = FlowMatching(ctx)
        config = LoopConfig(steps=10**9, accumulation=1, seed=0, run_dir=Path(run_dir), label="bench", device=device)
        trainer = Trainer(config, ctx.bundle.trainable_modules(), objective, ctx.stage.train, ctx.stage.optimizer)
        saved = saved_activations(objective)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        before, times = peak_rss(), []
        for _ in range(args.steps + 1):  # the first step (optimizer state appears) is not timed
            start = time.perf_counter()
            trainer.train_step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        times = times[1:]
        peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else peak_rss() - before
    return {"checkpointing": checkpointing, "saved_mib": saved / MIB, "peak_mib": peak / MIB,
            "peak_kind": "allocated (CUDA)" if device.type == "cuda" else "RSS above the built model",
            "step_s": statistics.median(times)}


def saved_activations(objective) -> int:
    total = [0]

    def pack(tensor):
        total[0] += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss, _ = objective(0, 0)
    del loss
    return total[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", default="specs/sd3_like.yaml")
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--one", choices=["off", "on"], help=argparse.SUPPRESS)  # a child process: one setting
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args, args.one == "on")))
        return
    results = {}
    for setting in ("off", "on"):
        out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--one", setting], capture_output=True,
                             text=True, check=True)
        results[setting] = json.loads(out.stdout.strip().splitlines()[-1])
        r = results[setting]
        print(f"gradient_checkpointing {setting:3}: saved activations {r['saved_mib']:8.1f} MiB, peak {r['peak_kind']} "
              f"{r['peak_mib']:8.1f} MiB, step {r['step_s']:.3f} s")
    off, on = results["off"], results["on"]
    print(f"gradient checkpointing: activations -{100 * (1 - on['saved_mib'] / off['saved_mib']):.0f}%, peak memory "
          f"-{100 * (1 - on['peak_mib'] / max(off['peak_mib'], 1e-9)):.0f}%, step time x{on['step_s'] / off['step_s']:.2f}")


if __name__ == "__main__":
    main()
