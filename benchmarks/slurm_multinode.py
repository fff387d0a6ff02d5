"""The toy stage on the local SLURM cluster with one node and with two (scripts/slurm-cluster.sh start --nodes 2).

Each stage is run with `flowspec run SPEC --executor slurm --wait` (fresh run folders), on one node (one
task) and on two (one task each, gloo over the cluster's bridge), alternately; prints the median
submit-to-finish wall time of the command and the training rate the stage logged (it/s of its last line).

    python benchmarks/slurm_multinode.py [--repeats 3] [--steps 300]

Needs a cluster of at least two nodes: `scripts/slurm-cluster.sh start --nodes 2`.
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
name: multinode{i}
model: {{kind: mlp, preset: small}}
data: {{source: {{kind: toy2d, distribution: {{kind: checkerboard}}}}}}
optimizer: {{kind: adamw, lr: 1.0e-3}}
train: {{global_batch: 512, checkpoint: {{every: 100000}}, samples: {{every: 100000, num_steps: 2, per_prompt: 16,
        prompts: [""]}}}}
executor: {{kind: slurm, nodes: {nodes}, gpus_per_node: 0, cpus_per_task: 1, timeout_min: 10}}
stages: [{{name: pretrain, kind: pretrain, steps: {steps}}}]
"""


def run_once(i: int, nodes: int, steps: int) -> tuple[float, float]:
    """(submit-to-finish seconds, logged it/s) of one stage on `nodes` nodes."""
    with tempfile.TemporaryDirectory() as folder:
        cwd = Path(folder)
        (cwd / "spec.yaml").write_text(SPEC.format(i=i, nodes=nodes, steps=steps))
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "flowspec.cli", "run", "spec.yaml", "--wait"], cwd=cwd,
                             capture_output=True, text=True)
        wall = time.perf_counter() - start
        if out.returncode != 0:
            raise SystemExit(f"{nodes} node(s): {out.stdout}{out.stderr}")
        metrics = next((cwd / "runs" / f"multinode{i}").glob("pretrain-*/metrics.jsonl"))
        return wall, json.loads(metrics.read_text().splitlines()[-1])["it_per_s"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    nodes = subprocess.run(["sinfo", "-h", "-N"], capture_output=True, text=True).stdout.splitlines()
    if len(nodes) < 2:
        print("needs a cluster of two nodes or more: scripts/slurm-cluster.sh start --nodes 2", file=sys.stderr)
        return 2
    results: dict[int, list[tuple[float, float]]] = {1: [], 2: []}
    for i in range(args.repeats):
        for count in (1, 2):
            results[count].append(run_once(2 * i + count, count, args.steps))
    for count, runs in results.items():
        walls, rates = [w for w, _ in runs], [r for _, r in runs]
        print(f"{count} node(s): submit to finish median {statistics.median(walls):.1f} s "
              f"({', '.join(f'{w:.1f}' for w in walls)}), {args.steps} steps at median {statistics.median(rates):.1f} it/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
