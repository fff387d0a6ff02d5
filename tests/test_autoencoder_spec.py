"""The autoencoder stage in the spec language: `model.latent.from` links it to the stages that use its latent
space (order, hashes, selection, the folder they load), and what it cannot read is refused at its line."""
import dataclasses
from pathlib import Path

import pytest

from flowspec.compiler import SpecError, compile_spec

SPEC = """\
flowspec: 1
name: ae
seed: 0
model:
  kind: unet
  preset: tiny
  latent: {kind: vae, preset: tiny, from: vae}
  text_encoder: {kind: builtin, num_layers: 1, max_tokens: 16}
data:
  source: {kind: shapes, num_images: 64}
  curriculum: [{at_step: 0, resolution: 32}]
optimizer: {kind: adamw, lr: 1.0e-3}
train: {global_batch: 8}
executor: {kind: local, gpu: cpu}
stages:
  - name: vae
    kind: autoencoder
    steps: 10
  - name: pretrain
    kind: pretrain
    steps: 10
"""


def plan_of(tmp_path, text=SPEC, sets=(), stages=None):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return compile_spec(str(path), None, list(sets), stages=stages)


def errors_of(tmp_path, text, sets=()):
    with pytest.raises(SpecError) as caught:
        plan_of(tmp_path, text, sets)
    return [str(issue) for issue in caught.value.issues]


def test_latent_stages_read_the_autoencoder_stage_and_load_its_export(tmp_path):
    plan = plan_of(tmp_path)
    vae, pretrain = plan.stages
    assert pretrain.upstream == {"latent": "vae"} and vae.upstream == {}
    assert [op.op for op in vae.ops] == ["load_autoencoder", "data", "train", "reconstruct", "latent_stats",
                                         "export_autoencoder"]
    assert plan.model_spec().latent.path == str(Path(vae.run_dir).resolve() / "model")
    assert plan.spec.model.latent.path is None  # the spec keeps what was written (a dump compiles back the same)
    # --stage pretrain runs the autoencoder stage first
    assert [s.name for s in plan_of(tmp_path, stages=["pretrain"]).stages] == ["vae", "pretrain"]


def test_the_autoencoder_hash_ignores_the_denoiser_and_feeds_the_latent_stages(tmp_path):
    base = {s.name: s.hash for s in plan_of(tmp_path).stages}
    other_denoiser = {s.name: s.hash for s in plan_of(tmp_path, sets=["model.text_encoder.num_layers=2",
                                                                       "timesteps.sampler.kind=uniform"]).stages}
    assert other_denoiser["vae"] == base["vae"] and other_denoiser["pretrain"] != base["pretrain"]
    other_vae = {s.name: s.hash for s in plan_of(tmp_path, sets=["stages.vae.kl_weight=0.001"]).stages}
    assert other_vae["vae"] != base["vae"] and other_vae["pretrain"] != base["pretrain"]


def test_latent_from_must_name_an_earlier_autoencoder_stage(tmp_path):
    found = errors_of(tmp_path, SPEC.replace("from: vae}", "from: vea}"))
    assert any(":7:" in e and "model.latent.from: unknown stage 'vea' (did you mean 'vae'?)" in e for e in found), found
    found = errors_of(tmp_path, SPEC.replace("from: vae}", "from: pretrain}"))
    assert any("'pretrain' is a pretrain stage: model.latent.from names an autoencoder stage" in e for e in found)
    swapped = SPEC.replace("  - name: vae\n    kind: autoencoder\n    steps: 10\n", "") + \
        "  - name: vae\n    kind: autoencoder\n    steps: 10\n"
    found = errors_of(tmp_path, swapped)
    assert any("stage 'pretrain' uses the latent space before 'vae' trains it" in e for e in found), found


def test_a_denoiser_stage_cannot_start_from_the_autoencoder(tmp_path):
    found = errors_of(tmp_path, SPEC + "  - {name: sft, kind: finetune, from: vae, steps: 5}\n")
    assert any("stages.sft.from: 'vae' trains the VAE, not a denoiser" in e for e in found), found


def test_from_and_path_together_are_refused(tmp_path):
    (tmp_path / "vae_folder").mkdir()
    found = errors_of(tmp_path, SPEC.replace("from: vae}", "from: vae, path: ./vae_folder}"))
    assert any("model.latent" in e and "not both" in e for e in found), found


def test_an_autoencoder_stage_nobody_uses_is_refused(tmp_path):
    found = errors_of(tmp_path, SPEC.replace(", from: vae}", "}"))
    assert any("autoencoder stage 'vae' trains a VAE no stage uses: set model.latent.from: vae" in e for e in found)
    found = errors_of(tmp_path, SPEC.replace("latent: {kind: vae, preset: tiny, from: vae}", "latent: {kind: pixel}")
                      .replace("preset: tiny\n", "preset: tiny\n  config: {in_channels: 3, out_channels: 3}\n", 1))
    assert any("model.latent is pixel space" in e for e in found), found


ROOT = {"timesteps": ("sampler.kind", "uniform"), "train": ("cfg_dropout", "0.2")}


@pytest.mark.parametrize("key,value", [("timesteps", "{sampler: {kind: uniform}}"),
                                       ("train", "{samples: {prompts: [a red circle]}}"),
                                       ("train", "{cfg_dropout: 0.2}")])
def test_denoiser_settings_written_under_an_autoencoder_stage_are_refused(tmp_path, key, value):
    text = SPEC.replace("    kind: autoencoder\n", f"    kind: autoencoder\n    {key}: {value}\n")
    found = errors_of(tmp_path, text)
    assert any(":18:" in e and "an autoencoder stage trains the VAE alone" in e for e in found), found
    # at the root they are the denoiser stages' settings, and fine
    plan_of(tmp_path, SPEC, ["{}.{}={}".format(key, *ROOT[key])])


def test_lora_on_an_autoencoder_stage_is_refused(tmp_path):
    found = errors_of(tmp_path, SPEC.replace("    kind: autoencoder\n", "    kind: autoencoder\n    lora: {rank: 4}\n"))
    assert any("stages.vae.lora: an autoencoder stage trains all of the VAE's weights" in e for e in found), found


def test_the_plan_estimates_the_vae_alone(tmp_path):
    from flowspec.runtime.estimate import estimate_plan
    from flowspec.runtime.models.build import build_vae

    plan = estimate_plan(plan_of(tmp_path))
    vae = build_vae(plan.spec.model.latent, device="meta")
    estimate = plan.stages[0].estimate
    assert estimate.params_total == estimate.params_trainable == sum(p.numel() for p in vae.parameters())
    doubled = estimate_plan(plan_of(tmp_path, sets=["stages.vae.steps=20"])).stages[0].estimate
    assert doubled.train_flops == pytest.approx(2 * estimate.train_flops)
    assert dataclasses.asdict(plan.stages[1].estimate)["params_total"] > estimate.params_total


@pytest.mark.parametrize("key,message", [
    ("train.compile=true", "stages.vae.train.compile: train.compile compiles a denoiser; an autoencoder stage has none"),
    ("train.offload_frozen=true", "stages.vae.train.offload_frozen: an autoencoder stage holds nothing frozen"),
    ("train.sharding=fsdp", "stages.vae.train.sharding: sharding fsdp does not run autoencoder stages yet")])
def test_training_settings_an_autoencoder_stage_cannot_apply_are_refused(tmp_path, key, message):
    found = errors_of(tmp_path, SPEC, [f"stages.vae.{key}"])
    assert any(message in e for e in found), found
