"""Small specs and subprocess helpers for end-to-end runtime tests."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

TOY = """\
flowspec: 1
name: toy
seed: 3
model: {kind: mlp, preset: tiny}
data:
  source: {kind: toy2d, distribution: {kind: gaussian_mixture, means: [[-1, 0], [1, 0]], stds: [0.2, 0.2]}}
timesteps: {sampler: {kind: logit_normal}}
optimizer: {kind: adamw, lr: 3.0e-3, schedule: {kind: cosine, warmup_steps: 5}}
train:
  global_batch: 64
  ema: {decay: 0.9}
  cfg_dropout: 0.0
  log_every: 5
  checkpoint: {every: 10, keep: 2}
  samples: {every: 1000, num_steps: 8, cfg_scale: 1.0, per_prompt: 200, prompts: [""]}
stages:
  - {name: pretrain, kind: pretrain, steps: 60}
  - {name: finetune, kind: finetune, from: pretrain, steps: 20, optimizer: {lr: 1.0e-3}}
"""

# A one-layer MMDiT on 16 px pixels: the smallest image model the end-to-end tests train.
TINY_IMAGE_MODEL = """\
model:
  kind: mmdit
  preset: tiny
  config: {in_channels: 3, out_channels: 3, sample_size: 16, patch_size: 4, num_layers: 1}
  latent: {kind: pixel}
  text_encoder: {kind: builtin, num_layers: 1, max_tokens: 8}
"""

IMAGE = """\
flowspec: 1
name: img
seed: 5
""" + TINY_IMAGE_MODEL + """\
data:
  source: {kind: shapes, num_images: 64}
  curriculum: [{at_step: 0, resolution: 16, complexity: [1, 1]}, {at_step: 8, resolution: 16, aspect_ratios: [0.5, 1.0, 2.0]}]
optimizer: {kind: adamw, lr: 1.0e-3}
train:
  global_batch: 8
  micro_batch: 4
  ema: {decay: 0.9}
  log_every: 2
  checkpoint: {every: 2}
  samples: {every: 8, num_steps: 3, per_prompt: 1, prompts: ["a red circle"]}
stages:
  - {name: pretrain, kind: pretrain, steps: 16}
"""


def write_spec(folder: Path, text: str, name: str = "spec.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def flowspec(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flowspec.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def start(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "flowspec.cli", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def kill_after_checkpoint(proc: subprocess.Popen, run_glob: str, cwd: Path, step: int, timeout: float = 300) -> None:
    """SIGKILL the run as soon as the checkpoint of `step` exists (the kill lands somewhere after it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if list(cwd.glob(f"{run_glob}/checkpoints/step-{step:08d}.pt")):
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return
        if proc.poll() is not None:
            raise AssertionError(f"run ended before step {step}: {proc.stdout.read()}")
        time.sleep(0.01)
    proc.kill()
    raise AssertionError("timed out waiting for a checkpoint")


def kill_and_resume(folder: Path, spec_text: str, spec_name: str, stage: str, step: int = 10) -> Path:
    """Run `stage` of the spec in `folder`, SIGKILL it after its checkpoint of `step`, run it again to the
    end; its stage folder."""
    write_spec(folder, spec_text)
    proc = start("run", "spec.yaml", "--stage", stage, cwd=folder)
    kill_after_checkpoint(proc, f"runs/{spec_name}/{stage}-*", folder, step)
    out = flowspec("run", "spec.yaml", "--stage", stage, cwd=folder)
    assert out.returncode == 0, out.stdout + out.stderr
    return stage_dir(folder, spec_name, stage)


def assert_same_weights(a: Path, b: Path) -> None:
    """Two stage folders exported the same weights, bit for bit."""
    first, second = weights(a), weights(b)
    assert first.keys() == second.keys() and first
    for key in first:
        assert torch.equal(first[key], second[key]), key


def weights(stage_dir: Path) -> dict[str, torch.Tensor]:
    out = {}
    for path in sorted((stage_dir / "model").rglob("*.safetensors")):
        for key, value in load_file(str(path)).items():
            out[f"{path.parent.name}/{key}"] = value
    return out


def stage_dir(root: Path, spec_name: str, stage: str) -> Path:
    found = list((root / "runs" / spec_name).glob(f"{stage}-*"))
    assert len(found) == 1, found
    return found[0]
