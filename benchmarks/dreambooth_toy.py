"""DreamBooth on CPU, from the quick-start model: teach it a subject the shapes vocabulary cannot describe
(examples/dreambooth/ring: a ring with a black and yellow checker texture, 5 images) with and without prior
preservation, full fine-tuning and LoRA, and measure

- subject fidelity: mean cosine similarity of EfficientNet-lite0 features (global average of the final
  feature map) between samples of the instance prompt and the instance images, against the same for the
  starting model's samples of that prompt;
- class preservation: the shapes checker's accuracy on plain captions of the class ("a red circle", "a blue
  circle", ... in every colour of the shapes data), against the starting model's.

    python benchmarks/dreambooth_toy.py [--steps 100] [--out runs-dreambooth] [--smoke]

--smoke shrinks everything (the quick start's smoke sizes, 2 DreamBooth steps) to check that the script runs.

The quick start's pre-training and fine-tuning run first (or are found finished in OUT); the four DreamBooth
stages start from the fine-tuned model. Numbers go to OUT/dreambooth_toy.json and the table printed.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SUBJECT = ROOT / "examples" / "dreambooth" / "ring"
INSTANCE_PROMPT = "a sks circle"
CLASS_PROMPT = "a circle"
VARIANTS = {  # name: (prior preservation, LoRA)
    "full_prior": (True, False), "full_plain": (False, False), "lora_prior": (True, True), "lora_plain": (False, True)}
FIDELITY_SAMPLES = 16
FULL_LR = 1.0e-4  # the LoRA variants take the quick start's subject stage as it is
PER_COLOUR = 8  # samples of each "a <colour> circle"


SMOKE = {"pretrain": 20, "finetune": 10}


def spec(steps: int, out: Path, smoke: bool = False) -> dict:
    """The quick start's spec (without its own DreamBooth stage) plus one DreamBooth stage per variant."""
    base = yaml.safe_load((ROOT / "specs" / "quickstart.yaml").read_text())
    base.pop("profiles", None)
    if smoke:
        base["data"]["curriculum"] = base["data"]["curriculum"][:1]
        base["optimizer"]["schedule"]["warmup_steps"] = 1
        base["train"]["samples"]["num_steps"] = 2  # also the end-of-stage evaluation's
        for stage in base["stages"]:
            stage["steps"] = SMOKE.get(stage["name"], stage["steps"])
    base["output_dir"] = str(out)
    base["stages"] = [s for s in base["stages"] if s["kind"] != "dreambooth"]
    shipped = next(s for s in yaml.safe_load((ROOT / "specs" / "quickstart.yaml").read_text())["stages"]
                   if s["kind"] == "dreambooth")
    for name, (prior, lora) in VARIANTS.items():
        stage = {**shipped, "name": name, "steps": steps, "instance_data": {"kind": "imagefolder", "path": str(SUBJECT)},
                 "instance_prompt": INSTANCE_PROMPT, "validation_prompts": [],
                 "prior": {"class_prompt": CLASS_PROMPT, "num_images": 4 if smoke else 64,
                           "sampling_steps": 2 if smoke else 20} if prior else None}
        if smoke:
            stage["optimizer"] = {**stage["optimizer"], "schedule": {"kind": "constant", "warmup_steps": 1}}
        if not lora:  # full fine-tuning: every weight moves, so a smaller step
            stage.pop("lora")
            stage["optimizer"] = {**stage["optimizer"], "lr": FULL_LR}
        base["stages"].append(stage)
    return base


def features(images, encoder):
    """(N, 1280) EfficientNet-lite0 features of (N, H, W, 3) uint8 images, L2-normalised."""
    import torch

    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    with torch.no_grad():
        grid = encoder.patch_features(pixels, grid=(7, 7))  # (N, 49, 1280): resized to 224 px, its training size
    return torch.nn.functional.normalize(grid.mean(dim=1), dim=-1)


def measure(stage_dir: Path, subject, encoder, num_steps: int | None = None) -> dict:
    import torch

    from flowspec.runtime.data.shapes import COLORS
    from flowspec.runtime.eval.checker import accuracy
    from flowspec.runtime.sample_cli import load_stage
    from flowspec.runtime.sampling import SampleRequest, generate

    _, stage, bundle = load_stage(stage_dir, torch.device("cpu"))
    samples = stage.train.samples
    ask = dict(num_steps=num_steps or samples.num_steps, cfg_scale=samples.cfg_scale, resolution=32)
    mine = generate(bundle, stage.timesteps, SampleRequest((INSTANCE_PROMPT,), FIDELITY_SAMPLES, seed=1, **ask))
    fidelity = (features(mine, encoder) @ subject.T).mean().item()
    from flowspec.runtime.report.plots import image_grid

    image_grid(list(mine), rows=2, cols=FIDELITY_SAMPLES // 2, path=stage_dir.parent / f"{stage_dir.name}-subject.png")
    prompts = tuple(f"a {colour} circle" for colour in COLORS)
    images = generate(bundle, stage.timesteps, SampleRequest(prompts, PER_COLOUR, seed=2, **ask))
    captions = [p for p in prompts for _ in range(PER_COLOUR)]  # generate's order: prompt by prompt
    return {"fidelity": round(fidelity, 4), "class_accuracy": round(accuracy(list(images), captions), 4)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("runs-dreambooth"))
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not any(SUBJECT.glob("*.png")):
        subprocess.run([sys.executable, str(SUBJECT.parent / "make_subject.py"), str(SUBJECT)], check=True)
    path = out / "dreambooth_toy.yaml"
    path.write_text(yaml.safe_dump(spec(2 if args.smoke else args.steps, out, args.smoke), sort_keys=False))
    subprocess.run([sys.executable, "-m", "flowspec.cli", "run", str(path), "--yes"], check=True, cwd=out)

    import numpy as np
    from PIL import Image

    from flowspec.runtime.models.vision import EfficientNetLite0

    encoder = EfficientNetLite0()
    subject = features(np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted(SUBJECT.glob("*.png"))]),
                       encoder)
    folders = {name: next(out.glob(f"quickstart/{name}-*/DONE")).parent for name in ["finetune", *VARIANTS]}
    results = {name: measure(folder, subject, encoder, 2 if args.smoke else None) for name, folder in folders.items()}
    results["steps"] = args.steps
    (out / "dreambooth_toy.json").write_text(json.dumps(results, indent=2))
    start = results["finetune"]
    print(f"{'model':<12} {'fidelity':>9} {'(vs start)':>11} {'class acc':>10} {'(vs start)':>11}")
    for name in ["finetune", *VARIANTS]:
        r = results[name]
        print(f"{name:<12} {r['fidelity']:>9.3f} {r['fidelity'] - start['fidelity']:>+11.3f} "
              f"{r['class_accuracy']:>10.3f} {r['class_accuracy'] - start['class_accuracy']:>+11.3f}")


if __name__ == "__main__":
    main()
