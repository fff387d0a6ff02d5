"""The autoencoder stage end to end: it trains the VAE (PSNR far above the untrained one), exports a diffusers
folder with the latent normalisation it measured, the next stage encodes with exactly that VAE, and an
interrupted autoencoder stage resumes to the same weights. The perceptual term's gradient reaches the decoder."""
import json
from pathlib import Path

import pytest
import torch

from .helpers import assert_same_weights, flowspec, kill_and_resume, stage_dir, write_spec

SPEC = """\
flowspec: 1
name: ae
seed: 2
model:
  kind: mmdit
  preset: tiny
  latent: {kind: vae, preset: tiny, from: vae}
  text_encoder: {kind: builtin, num_layers: 1, max_tokens: 8}
data:
  source: {kind: shapes, num_images: 64}
  curriculum: [{at_step: 0, resolution: 16, complexity: [1, 1]}]
optimizer: {kind: adamw, lr: 1.0e-3}
train:
  global_batch: 8
  log_every: 4
  checkpoint: {every: 4}
  samples: {every: 1000, num_steps: 2, per_prompt: 1, prompts: ["a red circle"]}
stages:
  - {name: vae, kind: autoencoder, steps: STEPS, reconstruction: l2, stats_images: 16, eval_images: 8}
  - {name: pretrain, kind: pretrain, steps: 2}
"""


def shapes_images(n: int = 16) -> torch.Tensor:
    from flowspec.runtime.data.shapes import ShapesDataset
    from flowspec.schemas.data import Shapes

    data = ShapesDataset(Shapes(num_images=1000), 99)  # other scenes than the stage trained on
    items = [data.item(i, 16, 16, (1, 1)).image for i in range(n)]
    return torch.stack([torch.from_numpy(im).permute(2, 0, 1).float() / 127.5 - 1 for im in items])


def reconstruction_psnr(vae, x) -> float:
    from flowspec.runtime.core.autoencoder import psnr

    with torch.no_grad():
        return float(psnr(x, vae.decode(vae.encode(x).latent_dist.mean).sample).mean())


@pytest.mark.slow  # an autoencoder stage of 60 steps and a latent stage of 2 (about 30 s)
def test_the_trained_vae_is_exported_normalised_and_used_by_the_next_stage(tmp_path):
    from diffusers import AutoencoderKL

    from flowspec.runtime.sample_cli import load_stage
    from flowspec.schemas.presets import VAE_PRESETS

    write_spec(tmp_path, SPEC.replace("STEPS", "60"))
    out = flowspec("run", "spec.yaml", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    vae_dir, latent_dir = stage_dir(tmp_path, "ae", "vae"), stage_dir(tmp_path, "ae", "pretrain")
    results = json.loads((vae_dir / "results.json").read_text())
    trained = AutoencoderKL.from_pretrained(str(vae_dir / "model"))
    assert trained.config.scaling_factor == results["latent"]["scaling_factor"]
    assert trained.config.shift_factor == results["latent"]["shift_factor"]
    assert results["eval"]["images"] == 8 and (vae_dir / "samples/step-00000060.png").is_file()

    torch.manual_seed(0)
    untrained = AutoencoderKL(**VAE_PRESETS["tiny"])
    x = shapes_images()
    assert reconstruction_psnr(trained, x) > reconstruction_psnr(untrained, x) + 5  # measured: 22.2 vs 6.0 dB

    resolved = json.loads((latent_dir / "resolved.json").read_text())
    assert Path(resolved["model"]["latent"]["path"]) == (vae_dir / "model").resolve()
    _, _, bundle = load_stage(latent_dir, torch.device("cpu"))  # as `flowspec sample` loads a finished stage
    assert bundle.codec.scale == results["latent"]["scaling_factor"]
    assert bundle.codec.shift == results["latent"]["shift_factor"]
    for key, value in trained.state_dict().items():
        assert torch.equal(bundle.codec.vae.state_dict()[key], value), key


@pytest.mark.slow  # two autoencoder stages of 12 steps, one killed after step 4 (about 20 s)
def test_an_interrupted_autoencoder_stage_resumes_to_the_same_weights(tmp_path):
    text = SPEC.replace("STEPS", "12").replace("  - {name: pretrain, kind: pretrain, steps: 2}\n", "")
    text = text.replace("stats_images: 16", "stats_images: 16, train: {ema: {decay: 0.9}}")
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    resumed = kill_and_resume(tmp_path / "a", text, "ae", "vae", step=4)
    write_spec(tmp_path / "b", text)
    assert flowspec("run", "spec.yaml", cwd=tmp_path / "b").returncode == 0
    assert_same_weights(resumed, stage_dir(tmp_path / "b", "ae", "vae"))


def test_the_perceptual_term_is_zero_on_the_image_and_its_gradient_reaches_the_reconstruction():
    pytest.importorskip("efficientnet_lite_pytorch")
    from flowspec.runtime.models.vision import EfficientNetLite0
    from flowspec.runtime.objectives.autoencoder import perceptual_distance

    features = EfficientNetLite0()
    x = shapes_images(2)
    assert perceptual_distance(features, x, x.clone()).item() == 0.0
    x_hat = (x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).requires_grad_(True)
    distance = perceptual_distance(features, x, x_hat)
    distance.backward()
    assert distance.item() > 0 and x_hat.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in features.parameters())
