"""Submit-to-finish time of a trivial stage on the local SLURM cluster (scripts/slurm-cluster.sh start).

A 1-step toy stage is run with `flowspec run SPEC --executor slurm --wait` several times (fresh run
folders); prints the median wall time of the whole command and of the job alone (sacct's Elapsed).

    python benchmarks/slurm_latency.py [--repeats 5]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPEC = """\
flowspec: 1
name: trivial
model: {kind: mlp, preset: tiny}
data: {source: {kind: toy2d, distribution: {kind: checkerboard}}}
optimizer: {kind: adamw, lr: 1.0e-3}
train: {global_batch: 16, samples: {every: 1000, num_steps: 2, per_prompt: 16, prompts: [""]}}
executor: {kind: slurm, gpus_per_node: 0, cpus_per_task: 1, timeout_min: 10, signal_delay_s: 30}
stages: [{name: pretrain, kind: pretrain, steps: 1}]
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    walls, elapsed = [], []
    for i in range(args.repeats):
        with tempfile.TemporaryDirectory() as folder:
            cwd = Path(folder)
            (cwd / "spec.yaml").write_text(SPEC.replace("name: trivial", f"name: trivial{i}"))
            start = time.perf_counter()
            out = subprocess.run([sys.executable, "-m", "flowspec.cli", "run", "spec.yaml", "--wait"], cwd=cwd,
                                 capture_output=True, text=True)
            walls.append(time.perf_counter() - start)
            if out.returncode != 0:
                print(out.stdout, out.stderr, file=sys.stderr)
                return 1
            job = json.loads((cwd / "runs" / f"trivial{i}" / "slurm.json").read_text())[-1]["jobs"][0]["job_id"]
            raw = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "ElapsedRaw", "-j", job], capture_output=True,
                                 text=True).stdout.split()
            elapsed.append(float(raw[0]) if raw else float("nan"))
    print(f"trivial stage, submit to finish (flowspec run --executor slurm --wait): median {statistics.median(walls):.1f} s "
          f"(runs: {', '.join(f'{w:.1f}' for w in walls)}); the job itself (sacct Elapsed): median "
          f"{statistics.median(elapsed):.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
