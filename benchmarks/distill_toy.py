"""Every distillation kind on 2-D points, from one teacher: the toy2d spec's model (specs/toy2d.yaml, its
pretrain stage as shipped), sampled with 32 Euler steps. Each kind's distillation report (student at 1, 2,
4 steps and its own, teacher at 8 and 32, on the same seeds) is read back and tabled: sliced W2 and MMD to
2000 fresh points of the data, next to the data's own floor (two fresh samples of 2000 points).

    python benchmarks/distill_toy.py [--out runs-distill] [--smoke]

Goal (issue 14): a 1-step student within 10% of the 32-step teacher's sliced W2 for at least one kind.
InstaFlow is reflow (2-rectified flow on the teacher's pairs) then reflow with one_step on the 2-RF's pairs.
Numbers go to OUT/distill_toy.json and the table printed.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PAIRS = 20_000
KINDS = {
    "progressive": {"kind": "progressive_distill", "teacher_steps": 32, "rounds": 5, "steps": 2500,
                    "train": {"samples": {"num_steps": 1}}},
    "reflow": {"kind": "reflow", "num_pairs": PAIRS, "teacher_steps": 32, "steps": 3000,
               "train": {"samples": {"num_steps": 4}}},
    "instaflow": {"kind": "reflow", "from": "reflow", "num_pairs": PAIRS, "teacher_steps": 4, "one_step": True,
                  "steps": 1500, "train": {"samples": {"num_steps": 1}}},
    "lcm": {"kind": "consistency_distill", "num_timesteps": 20, "skip": 50, "w_range": [1.0, 1.0], "ema_decay": 0.95,
            "loss": "huber", "huber_c": 0.01, "steps": 2500, "train": {"samples": {"num_steps": 1, "solver": "consistency"}}},
    "add": {"kind": "adversarial_distill", "steps": 2500, "distill_weight": 2.5,
            "discriminator": {"lr": 1.0e-3, "r1_weight": 1.0e-3}, "train": {"samples": {"num_steps": 4}}},
    "dmd2": {"kind": "distribution_matching", "steps": 3000, "fake_updates": 4, "fake_lr": 1.0e-3,
             "train": {"samples": {"num_steps": 1}}},
}


def spec(out: Path, smoke: bool) -> dict:
    toy = yaml.safe_load((ROOT / "specs/toy2d.yaml").read_text())
    toy.pop("profiles", None)
    toy.update(name="distill_toy", output_dir=str(out))
    toy["train"]["samples"].update(num_steps=32, every=10**6)
    toy["train"]["checkpoint"] = {"every": 1000}
    teacher = toy["stages"][0]  # the toy2d model as shipped
    stages = [teacher]
    for name, settings in KINDS.items():
        stage = {"name": name, "from": "pretrain", "optimizer": {"lr": 1.0e-3, "schedule": {"kind": "constant",
                                                                                         "warmup_steps": 20}},
                 "train": {"ema": None}, **settings}
        stage["train"] = {**stage["train"], **settings.get("train", {})}
        if smoke:
            stage["steps"] = 40 if name != "progressive" else 50
            if "num_pairs" in stage:
                stage["num_pairs"] = 512
        stages.append(stage)
    if smoke:
        teacher["steps"] = 200
    toy["stages"] = stages
    return toy


def table(out: Path) -> list[dict]:
    from flowspec.compiler import compile_spec

    plan = compile_spec(str(out / "distill_toy.yaml"))
    rows = []
    for stage in plan.stages[1:]:
        report = json.loads((Path(stage.run_dir) / "distill_report.json").read_text())
        for row in report["rows"]:
            rows.append({"kind": stage.name, **{k: row[k] for k in ("model", "steps", "nfe", "sliced_wasserstein", "mmd",
                                                                   "seconds_per_sample")}})
        if "straightness" in report:
            rows[-1]["straightness"] = report["straightness"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("runs-distill"))
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "distill_toy.yaml"
    path.write_text(yaml.safe_dump(spec(out / "runs", args.smoke), sort_keys=False))
    subprocess.run([sys.executable, "-m", "flowspec.cli", "run", str(path), "--yes"], check=True, cwd=out)
    rows = table(out)
    teacher = next(r for r in rows if r["model"] == "teacher" and r["steps"] == 32)
    print(f"{'kind':12} {'model':8} {'steps':>5} {'sliced W2':>10} {'MMD':>9} {'us/sample':>10}")
    for r in rows:
        print(f"{r['kind']:12} {r['model']:8} {r['steps']:5d} {r['sliced_wasserstein']:10.4f} {r['mmd']:9.5f} "
              f"{1e6 * r['seconds_per_sample']:10.1f}")
    one_step = {r["kind"]: r["sliced_wasserstein"] for r in rows if r["model"] == "student" and r["steps"] == 1}
    best = min(one_step, key=one_step.get)
    ratio = one_step[best] / teacher["sliced_wasserstein"]
    print(f"teacher, 32 steps: sliced W2 {teacher['sliced_wasserstein']:.4f}; best 1-step student: {best} "
          f"{one_step[best]:.4f} ({ratio:.2f}x; goal <= 1.10x)")
    (out / "distill_toy.json").write_text(json.dumps({"rows": rows, "one_step": one_step, "best": best,
                                                      "ratio_to_teacher_32": ratio}, indent=2))


if __name__ == "__main__":
    main()
