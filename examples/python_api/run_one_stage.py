"""The Python API: compile a spec, read its plan, run one stage, and load what it exported with diffusers.

    python examples/python_api/run_one_stage.py specs/quickstart.yaml --profile smoke --stage pretrain --out runs-api

Prints the plan's stages (operators, parameters, FLOPs, memory), runs the chosen stage (and the stages it reads),
loads its exported denoiser with the diffusers class of the spec's model family, and draws one velocity.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from flowspec.compiler import compile_spec
from flowspec.runtime.estimate import estimate_plan
from flowspec.runtime.executors import run_plan
from flowspec.runtime.models.build import denoiser_class, example_inputs
from flowspec.runtime.ops import resolve


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec")
    parser.add_argument("--profile")
    parser.add_argument("--stage", required=True)
    parser.add_argument("--out", default="runs", help="output_dir of the run")
    args = parser.parse_args()

    # 1. Compile: every check of `flowspec validate`, then the plan with each stage's operators.
    plan = compile_spec(args.spec, args.profile, [f"output_dir={args.out}"], stages=[args.stage], resolver=resolve,
                        runnable=True)
    plan = estimate_plan(plan)  # exact parameter counts, FLOPs and memory, measured on the meta device
    for stage in plan.stages:
        estimate = stage.estimate
        print(f"{stage.name}: {' -> '.join(op.op for op in stage.ops)}; {estimate.params_total:,} parameters, "
              f"{estimate.train_flops:.3g} FLOPs, {estimate.memory_gib:.2f} GiB per device; {stage.run_dir}")

    # 2. Run: finished stages (same hash) are skipped, unfinished ones resume.
    code = run_plan(plan, yes=True)
    if code:
        return code

    # 3. Load the stage's export with diffusers: model/denoiser is a from_pretrained folder.
    folder = Path(plan.stage(args.stage).run_dir) / "model" / "denoiser"
    model_spec = plan.spec.model
    net = denoiser_class(model_spec.kind).from_pretrained(str(folder)).eval()
    side = model_spec.resolved_config().get("sample_size", 8)
    with torch.no_grad():
        out = net(**example_inputs(model_spec, 1, side, side, text_tokens=8, device="cpu"))
    velocity = out[0] if isinstance(out, tuple) else out.sample
    print(f"loaded {type(net).__name__} from {folder}: velocity of shape {tuple(velocity.shape)}, "
          f"finite: {bool(torch.isfinite(velocity).all())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
