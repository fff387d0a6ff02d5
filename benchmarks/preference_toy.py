"""Preference tuning on 2-D points, from one base and with one step budget: ReFL, Flow-GRPO with and
without its KL term, and Diffusion-DPO, each rewarded by toy2d_region around one mode of a 4-mode
mixture the base was trained on. For each, on 4000 samples of fixed seeds:

- reward: toy2d_region's mean, before (the base) and after;
- in mode: the share of samples within 3 standard deviations of the rewarded mode;
- rest W2: the sliced W2 distance between the base's and the tuned model's samples that lie nearer to one
  of the three other modes (how much the rest of the distribution moved).

    python benchmarks/preference_toy.py [--steps 30] [--out runs-preference] [--smoke]

Expected: every method raises the reward; GRPO with KL moves the rest less than GRPO without it.

Reward hacking and `gold:`: one more ReFL stage ("hack") is rewarded for a region away from every mode
while its gold evaluation scores the four modes, with stop_when_gold_drops; printed: the training reward
and gold at each evaluation, where the stage stopped and which step's weights it exported.
Numbers go to OUT/preference_toy.json and the tables printed.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml

MEANS = [[-1.5, -1.5], [-1.5, 1.5], [1.5, -1.5], [1.5, 1.5]]
STD = 0.25
TARGET = MEANS[3]
REWARD = {"kind": "toy2d_region", "centers": [TARGET], "radius": STD}
SAMPLES = 4000
COMMON = {"from": "base", "optimizer": {"lr": 1.0e-3}}
METHODS = {
    "refl": {"kind": "reward_feedback", "sampling_steps": 10, "grad_steps": [6, 9], "grad_scale": 1.0,
             "reward_margin": 0.0, "pretrain_loss_weight": 0.0, "reward": REWARD},
    "grpo_kl": {"kind": "flow_grpo", "group_size": 8, "sampling_steps": 10, "eval_steps": 10, "cfg_scale": 1.0,
                "clip_range": 0.2, "kl_beta": 1.0, "reward": REWARD},
    "grpo_no_kl": {"kind": "flow_grpo", "group_size": 8, "sampling_steps": 10, "eval_steps": 10, "cfg_scale": 1.0,
                   "clip_range": 0.2, "kl_beta": 0.0, "reward": REWARD},
    "dpo": {"kind": "diffusion_dpo", "beta": 50.0,
            "pairs": {"kind": "generated", "num_pairs": 2048, "sampling_steps": 10, "reward": REWARD}},
}
HACK = {"name": "hack", "kind": "reward_feedback", "from": "base", "steps": 100, "sampling_steps": 10,
        "grad_steps": [6, 9], "grad_scale": 1.0, "reward_margin": 0.0, "pretrain_loss_weight": 0.0,
        "reward": {"kind": "toy2d_region", "centers": [[3.5, 0.0]], "radius": STD},
        "gold": {"reward": {"kind": "toy2d_region", "centers": MEANS, "radius": STD}, "every": 10,
                 "stop_when_gold_drops": 2},
        "optimizer": {"lr": 3.0e-3}}


def spec(steps: int, base_steps: int, out: Path) -> dict:
    stages = [{"name": "base", "kind": "pretrain", "steps": base_steps, "optimizer": {"lr": 3.0e-3}}]
    stages += [{"name": name, "steps": steps, **COMMON, **method} for name, method in METHODS.items()]
    stages.append(HACK)
    return {"flowspec": 1, "name": "preference_toy", "seed": 0, "output_dir": str(out),
            "model": {"kind": "mlp", "preset": "tiny"},
            "data": {"source": {"kind": "toy2d", "distribution": {"kind": "gaussian_mixture", "means": MEANS,
                                                                   "stds": [STD] * 4}}},
            "timesteps": {"sampler": {"kind": "logit_normal"}},
            "optimizer": {"kind": "adamw", "lr": 1.0e-3, "schedule": {"kind": "constant", "warmup_steps": 5}},
            "train": {"global_batch": 128, "ema": None, "cfg_dropout": 0.0, "log_every": 10,
                      "checkpoint": {"every": 1000},
                      "samples": {"every": 100000, "num_steps": 10, "cfg_scale": 1.0, "prompts": [""]}},
            "stages": stages}


def points(folder: Path):
    import torch

    from flowspec.runtime.sample_cli import load_stage
    from flowspec.runtime.sampling import SampleRequest, generate

    _, stage, bundle = load_stage(folder, torch.device("cpu"))
    return torch.from_numpy(generate(bundle, stage.timesteps, SampleRequest(("",), SAMPLES, seed=7, num_steps=10)))


def measure(base, tuned) -> dict:
    import torch

    from flowspec.runtime.eval.metrics import sliced_wasserstein

    means, target = torch.tensor(MEANS), torch.tensor(TARGET)

    def rest(x):  # the points nearer to one of the other modes than to the rewarded one
        return x[torch.cdist(x, means).argmin(dim=1) != 3]

    distance = (tuned - target).norm(dim=1)
    return {"reward": (-(distance - STD).clamp(min=0)).mean().item(),
            "in_mode": (distance < 3 * STD).float().mean().item(),
            "rest_w2": sliced_wasserstein(rest(base), rest(tuned), generator=torch.Generator().manual_seed(0))}


def gold_run(folder: Path) -> dict:
    """The hack stage's gold history beside its training reward (the mean of the batch at that step)."""
    history = json.loads((folder / "gold.json").read_text())["history"]
    logged = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    reward = {m["step"]: m["reward"] for m in logged if "reward" in m}
    gold = json.loads((folder / "results.json").read_text())["gold"]
    return {"history": [{**h, "reward": reward.get(h["step"])} for h in history],
            "best_step": gold["best"]["step"], "stopped_at": gold.get("finished_early_at")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("runs-preference"))
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    steps, base_steps = (6, 20) if args.smoke else (args.steps, 1500)
    path = out / "preference_toy.yaml"
    path.write_text(yaml.safe_dump(spec(steps, base_steps, out), sort_keys=False))
    subprocess.run([sys.executable, "-m", "flowspec.cli", "run", str(path), "--yes"], check=True, cwd=out)
    from flowspec.compiler import compile_spec

    folders = {s.name: Path(s.run_dir) for s in compile_spec(str(path)).stages}  # as the plan names them
    base = points(folders["base"])
    results = {name: measure(base, points(folder)) for name, folder in folders.items()}
    results["steps"] = steps
    results["hack"] = gold_run(folders["hack"])
    (out / "preference_toy.json").write_text(json.dumps(results, indent=2))
    print(f"{'model':<12} {'reward':>8} {'in mode':>8} {'rest W2':>8}")
    for name in ["base", *METHODS]:
        r = results[name]
        print(f"{name:<12} {r['reward']:>8.3f} {r['in_mode']:>8.3f} {r['rest_w2']:>8.3f}")

    hack = results["hack"]
    print(f"\nhack (rewarded off the data, gold = the four modes): stopped at step {hack['stopped_at']}, "
          f"exported step {hack['best_step']}")
    print(f"{'step':>6} {'reward':>8} {'gold':>8}")
    for h in hack["history"]:
        reward = "-" if h["reward"] is None else f"{h['reward']:.3f}"
        print(f"{h['step']:>6} {reward:>8} {h['gold']:>8.3f}")


if __name__ == "__main__":
    main()
