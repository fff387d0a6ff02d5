"""Preference tuning on images: the quick-start model (the pretrain and finetune stages of
specs/quickstart_preference.yaml, the same as quickstart.yaml's) tuned by that spec's Flow-GRPO stage and by
Diffusion-DPO, both with the shapes checker's reward, and by ReFL with the differentiable shapes_color
reward, each with the same step budget on captions of complexity 2-3 (ReFL a second time with a `gold:`
watch by the checker, which stops it once the checker falls); and the fine-tuned model on one-word
prompts, with and without the vocabulary prompt enhancer.

Measured on held-out captions (complexity 2-3, fixed seeds, 20 ODE steps): checker accuracy (every check
of the caption passes), colour accuracy (the caption's colours are found), the shapes_color reward, and
chance beside them (a clean image of another caption). One-word prompts ("circle", "red", ...) are
scored against the ORIGINAL word: the share of images in which the checker's detector finds an object
of that shape or colour.

    python benchmarks/preference_shapes.py [--steps 40] [--out runs-preference-shapes] [--smoke]

Numbers go to OUT/preference_shapes.json and the table printed.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BAND = [2, 3]
DATA = {"curriculum": [{"at_step": 0, "resolution": 32, "complexity": BAND}]}


@dataclass(frozen=True)
class Sizes:
    captions: int = 96  # held-out captions, each drawn with `seeds` seeds
    seeds: int = 2
    word_seeds: int = 16  # images per one-word prompt
    pairs: int = 512  # Diffusion-DPO's generated pairs
    chance: int = 3000  # Monte-Carlo pairs of the chance level


SMOKE = Sizes(captions=4, seeds=1, word_seeds=1, pairs=16, chance=50)
NAMES = ["finetune", "grpo", "dpo", "refl", "refl_gold"]
METHODS = {  # beside the spec's grpo stage
    "dpo": {"kind": "diffusion_dpo", "beta": 1000.0,
            "pairs": {"kind": "generated", "reward": {"kind": "shapes_checker"}, "num_pairs": 512, "sampling_steps": 20},
            "optimizer": {"lr": 1.0e-4, "schedule": {"kind": "constant", "warmup_steps": 0}},
            "train": {"global_batch": 32, "ema": None, "precision": "fp32"}},
    "refl": {"kind": "reward_feedback", "reward": {"kind": "shapes_color"}, "sampling_steps": 20,
             "grad_steps": [14, 19], "grad_scale": 1.0, "reward_margin": 1.0, "pretrain_loss_weight": 1.0,
             "optimizer": {"lr": 1.0e-4, "schedule": {"kind": "constant", "warmup_steps": 0}},
             "train": {"global_batch": 16, "ema": None, "precision": "fp32"}},
}
# ReFL again, watched by the checker on held-out captions: it stops once the checker has fallen twice
METHODS["refl_gold"] = {**METHODS["refl"], "gold": {"reward": {"kind": "shapes_checker"}, "stop_when_gold_drops": 2}}


def spec(steps: int, out: Path, sizes: Sizes) -> dict:
    """quickstart_preference.yaml as it is but for its grpo stage's steps, then one stage per method from
    the finetuned model with the same steps and data."""
    base = yaml.safe_load((ROOT / "specs" / "quickstart_preference.yaml").read_text())
    base["output_dir"] = str(out)
    base["stages"][-1]["steps"] = steps
    for name, method in METHODS.items():
        base["stages"].append({"name": name, "from": "finetune", "steps": steps, **method, "data": DATA})
    stages = {s["name"]: s for s in base["stages"]}
    stages["dpo"]["pairs"]["num_pairs"] = sizes.pairs
    stages["refl_gold"]["gold"] = {**stages["refl_gold"]["gold"], "every": max(1, steps // 4)}
    return base


def stage_folders(path: Path, profile: str | None) -> dict[str, Path]:
    """Each stage's folder as the plan names it (an output_dir may hold older runs of a stage)."""
    from flowspec.compiler import compile_spec

    return {s.name: Path(s.run_dir) for s in compile_spec(str(path), profile).stages}


def load(folder: Path):
    """(stage, bundle) of a finished stage folder."""
    import torch

    from flowspec.runtime.sample_cli import load_stage

    _, stage, bundle = load_stage(folder, torch.device("cpu"))
    return stage, bundle


def sample(stage, bundle, prompts: list[str], per_prompt: int, seed: int) -> list:
    from flowspec.runtime.sampling import SampleRequest, generate

    request = SampleRequest(tuple(prompts), per_prompt, seed=seed, num_steps=20, cfg_scale=3.0, resolution=32)
    return list(generate(bundle, stage.timesteps, request))


def measure(folder: Path, sizes: Sizes) -> dict:
    """Checker and colour accuracy and shapes_color on held-out captions of complexity 2-3."""
    import numpy as np
    import torch

    from flowspec.runtime.data.shapes import eval_captions
    from flowspec.runtime.eval.checker import check
    from flowspec.runtime.rewards import build_reward
    from flowspec.schemas.rewards import ShapesColor

    captions = eval_captions(2024, sizes.captions, tuple(BAND))
    images = sample(*load(folder), captions, sizes.seeds, seed=4242)
    prompts = [c for c in captions for _ in range(sizes.seeds)]
    checked = [check(image, prompt) for image, prompt in zip(images, prompts)]  # once per image: it is slow
    items = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return {"checker": float(np.mean([c.correct for c in checked])),
            "color": float(np.mean([c.checks["color"] for c in checked])),
            "shapes_color": build_reward(ShapesColor(), None).score(items, prompts).mean().item()}


def words() -> list[str]:
    """Every shape and colour of the shapes data, each a one-word prompt."""
    from flowspec.schemas.data import COLOR_NAMES, SHAPE_NAMES

    return [*SHAPE_NAMES, *COLOR_NAMES]


def word_found(image, word: str) -> bool:
    from flowspec.runtime.eval.checker import detect

    return any(word in (d.color, d.shape) for d in detect(image))


def enhancement(folder: Path, sizes: Sizes) -> dict:
    """One-word prompts, as given and rewritten by the vocabulary enhancer, scored against the word."""
    from flowspec.runtime.enhance import build_enhancer
    from flowspec.runtime.ops.enhance import stream_captions
    from flowspec.schemas.rewards import VocabularyEnhancer

    prompts = words()
    stage, bundle = load(folder)
    plain = sample(stage, bundle, prompts, sizes.word_seeds, seed=99)
    enhancer = build_enhancer(VocabularyEnhancer(), lambda n: stream_captions(stage, bundle, 0, n))
    rewritten = [enhancer([word], seed)[0] for word in prompts for seed in range(sizes.word_seeds)]
    enhanced = sample(stage, bundle, rewritten, 1, seed=99)
    asked = [w for w in prompts for _ in range(sizes.word_seeds)]
    score = lambda images: sum(map(word_found, images, asked)) / len(asked)  # noqa: E731
    return {"without": score(plain), "with": score(enhanced), "examples": rewritten[::sizes.word_seeds]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--out", type=Path, default=Path("runs-preference-shapes"))
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "preference_shapes.yaml"
    sizes = SMOKE if args.smoke else Sizes()
    path.write_text(yaml.safe_dump(spec(2 if args.smoke else args.steps, out, sizes), sort_keys=False))
    profile = "smoke" if args.smoke else None
    subprocess.run([sys.executable, "-m", "flowspec.cli", "run", str(path), "--yes", *(["--profile", profile] if
                    profile else [])], check=True, cwd=out)
    folders = stage_folders(path, profile)
    from flowspec.runtime.eval.checker import chance_accuracy

    results = {name: measure(folders[name], sizes) for name in NAMES}
    results["chance"] = chance_accuracy(tuple(BAND), n=sizes.chance)
    results["enhancement"] = enhancement(folders["finetune"], sizes)
    results["steps"] = args.steps
    results["refl_gold"]["gold"] = json.loads((folders["refl_gold"] / "results.json").read_text())["gold"]
    (out / "preference_shapes.json").write_text(json.dumps(results, indent=2))
    print(f"{'model':<10} {'checker':>8} {'colour':>8} {'shapes_color':>13}")
    for name in NAMES:
        r = results[name]
        print(f"{name:<10} {r['checker']:>8.3f} {r['color']:>8.3f} {r['shapes_color']:>13.3f}")
    print(f"chance     {results['chance']:>8.3f}")
    gold = results["refl_gold"]["gold"]
    print(f"refl_gold: stopped at step {gold['finished_early_at']}, exported step {gold['best']['step']}")
    e = results["enhancement"]
    print(f"one-word prompts, the word found: without enhancer {e['without']:.3f}, with {e['with']:.3f}")


if __name__ == "__main__":
    main()
