"""Every distillation kind on shapes, from one teacher: the fine-tuned quick-start model (quickstart.yaml's
`pretrain` and `finetune`, as shipped), sampled with 20 Euler steps at CFG 3. Each kind trains a 4-step
student for the same number of steps; its distillation report (student at 1, 2, 4 steps, teacher at 8 and 20,
on 64 captions of fresh scenes and the same seeds) is read back and tabled: the checker's accuracy and the
Frechet distance of EfficientNet-lite0 features to the scenes' renders, NFE and time per sample.

    python benchmarks/distill_shapes.py [--steps 300] [--out runs-distill-shapes] [--smoke]

Numbers go to OUT/distill_shapes.json and the table printed.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
FOUR = {"train": {"samples": {"num_steps": 4}}}
KINDS = {
    "progressive": {"kind": "progressive_distill", "teacher_steps": 16, "rounds": 2, **FOUR},
    "reflow": {"kind": "reflow", "num_pairs": 1024, "teacher_steps": 16, **FOUR},
    "lcm": {"kind": "consistency_distill", "num_timesteps": 20, "skip": 50, "w_range": [3.0, 3.0],
            "train": {"samples": {"num_steps": 4, "solver": "consistency"}}},
    "add": {"kind": "adversarial_distill", **FOUR},
    "dmd2": {"kind": "distribution_matching", "fake_updates": 2, "fake_lr": 3.0e-4,
             "student_timesteps": [1.0, 0.75, 0.5, 0.25], **FOUR},
}


def spec(steps: int, out: Path, smoke: bool) -> dict:
    quick = yaml.safe_load((ROOT / "specs/quickstart.yaml").read_text())
    quick.pop("profiles", None)
    quick["output_dir"] = str(out)
    quick["stages"] = quick["stages"][:2]  # pretrain, finetune: the teacher
    if smoke:  # the quick start's own smoke sizes
        quick["stages"][0]["steps"], quick["stages"][1]["steps"] = 20, 10
        quick["data"]["curriculum"][1]["at_step"] = 10
        quick["optimizer"]["schedule"]["warmup_steps"] = 2
        steps = 12
    for name, settings in KINDS.items():
        stage = {"name": name, "from": "finetune", "steps": steps,
                 "optimizer": {"lr": 1.0e-4, "schedule": {"kind": "constant", "warmup_steps": 10}},
                 "data": {"curriculum": [{"at_step": 0, "resolution": 32, "complexity": [1, 3]}]}, **settings}
        if smoke and "num_pairs" in stage:
            stage["num_pairs"] = 64
        quick["stages"].append(stage)
    return quick


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("runs-distill-shapes"))
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "distill_shapes.yaml"
    path.write_text(yaml.safe_dump(spec(args.steps, out / "runs", args.smoke), sort_keys=False))
    subprocess.run([sys.executable, "-m", "flowspec.cli", "run", str(path), "--yes"], check=True, cwd=ROOT)

    from flowspec.compiler import compile_spec

    rows = []
    for stage in compile_spec(str(path)).stages[2:]:
        report = json.loads((Path(stage.run_dir) / "distill_report.json").read_text())
        rows += [{"kind": stage.name, **row} for row in report["rows"]]
    print(f"{'kind':12} {'model':8} {'steps':>5} {'NFE':>4} {'checker':>8} {'Frechet':>9} {'ms/sample':>10}")
    for r in rows:
        print(f"{r['kind']:12} {r['model']:8} {r['steps']:5d} {r['nfe']:4d} {r['checker_accuracy']:8.3f} "
              f"{r.get('frechet_effnet', float('nan')):9.2f} {1e3 * r['seconds_per_sample']:10.2f}")
    (out / "distill_shapes.json").write_text(json.dumps({"steps": args.steps, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
