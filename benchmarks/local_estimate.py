"""How close the time a local run announces (the plan's training FLOPs over a matrix-multiply probe of this
machine, times PROBE_SHARE) comes to the training time the run then takes.

    python benchmarks/local_estimate.py [--spec specs/quickstart.yaml] [--stage pretrain] [--steps 400]

The stage runs (with `--steps` steps, default the spec's) in a temporary folder; its training time is steps / it/s as the run
logs it (model build, sampling and evaluation left out, as the estimate leaves them out). A ratio above 1
means the announcement is pessimistic.
"""
import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spec", default="specs/quickstart.yaml")
    parser.add_argument("--stage", default="pretrain")
    parser.add_argument("--steps", type=int, help="default: the stage's own")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="more overrides for the run")
    args = parser.parse_args()

    from flowspec.compiler import compile_spec
    from flowspec.runtime.estimate import estimate_stage
    from flowspec.runtime.executors.sizing import PROBE_SHARE, measure_here

    sets = [*([f"stages.{args.stage}.steps={args.steps}"] if args.steps else []), *args.sets]
    plan = compile_spec(str(ROOT / args.spec), None, sets, stages=[args.stage])
    steps = plan.stage(args.stage).steps
    here = measure_here(1)
    flops = estimate_stage(plan, plan.stage(args.stage)).train_flops
    estimated = flops / (here.tflops * 1e12 * PROBE_SHARE * here.parallel)
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / Path(args.spec).name
        shutil.copy(ROOT / args.spec, spec)
        command = [sys.executable, "-m", "flowspec.cli", "run", spec.name, "--stage", args.stage, "--yes",
                   *[part for s in sets for part in ("--set", s)]]
        subprocess.run(command, cwd=tmp, check=True, capture_output=True, text=True)
        metrics = next(Path(tmp).glob(f"runs/*/{args.stage}-*/metrics.jsonl")).read_text().splitlines()
        rates = [json.loads(line)["it_per_s"] for line in metrics if "it_per_s" in line]
    measured = steps / statistics.median(rates)
    print(f"here: {here}")
    print(f"{args.spec} {args.stage}, {steps} steps, {flops:.3g} training FLOPs")
    print(f"announced {estimated:.1f} s, trained in {measured:.1f} s: ratio announced / measured {estimated / measured:.2f}")


if __name__ == "__main__":
    main()
