"""`lora:` on a training stage: only the adapters train and are checkpointed (with the frozen base's hash),
the stage resumes bitwise after kill -9, exports the adapter with the base it was trained on, and a later
stage starts from the base with the adapter merged in; an adapter is never applied to another base."""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from flowspec.compiler import compile_spec
from flowspec.runtime.models.bundle import build_bundle, load_exported
from flowspec.runtime.models.lora import BASE_FILE, COMFY_NAME, WEIGHT_NAME, apply_lora, fingerprint
from flowspec.runtime.train.checkpoint import list_checkpoints, load_checkpoint

from .helpers import TOY, flowspec, kill_after_checkpoint, stage_dir, start, weights, write_spec

PRETRAIN_ONLY = TOY.replace("  - {name: finetune, kind: finetune, from: pretrain, steps: 20, optimizer: {lr: 1.0e-3}}\n",
                            "")
LORA = PRETRAIN_ONLY + ("  - {name: adapt, kind: finetune, from: pretrain, steps: 40, optimizer: {lr: 1.0e-2},\n"
                        "     lora: {rank: 2, targets: all-linear, format: [diffusers, comfyui]}}\n"
                        "  - {name: after, kind: finetune, from: adapt, steps: 10}\n"
                        "  - {name: merged, kind: finetune, from: pretrain, steps: 10, optimizer: {lr: 1.0e-2},\n"
                        "     lora: {rank: 2, targets: all-linear, merge_on_export: true}}\n")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lora")
    write_spec(folder, LORA)
    out = flowspec("run", "spec.yaml", cwd=folder)
    assert out.returncode == 0, out.stdout + out.stderr
    return folder


def adapter_names(module_state: dict) -> set[str]:
    return {k for k in module_state if "lora_" in k}


def test_only_the_adapters_train_and_are_checkpointed_with_the_bases_hash(finished):
    adapt = stage_dir(finished, "toy", "adapt")
    state = load_checkpoint(list_checkpoints(adapt)[-1])
    denoiser = state["modules"]["denoiser"]
    assert denoiser and adapter_names(denoiser) == set(denoiser)
    assert len(state["optimizer"]["state"]) == len(denoiser)  # the optimizer holds the adapters alone
    base = json.loads((adapt / "model" / BASE_FILE).read_text())
    assert state["frozen_base"] == base["base_hash"]
    pretrain = stage_dir(finished, "toy", "pretrain")
    assert base["base"] == str((pretrain / "model").resolve())
    bundle = build_bundle(compile_spec(str(finished / "spec.yaml")).spec.model, seed=0)
    load_exported(bundle, pretrain / "model")
    assert fingerprint(bundle) == base["base_hash"]
    assert not (adapt / "model" / "denoiser").exists()  # no merged copy of the base without merge_on_export
    assert (adapt / "model" / "lora" / COMFY_NAME).exists()  # format: [diffusers, comfyui]
    assert not (stage_dir(finished, "toy", "merged") / "model" / "lora" / COMFY_NAME).exists()  # diffusers only


def test_a_later_stage_starts_from_the_base_with_the_adapter_merged(finished):
    plan = compile_spec(str(finished / "spec.yaml"))
    assert plan.stage("after").ops[0].params["weights"] == "stage:adapt with its LoRA merged"
    model = plan.spec.model
    pretrain, adapt = stage_dir(finished, "toy", "pretrain"), stage_dir(finished, "toy", "adapt")
    merged = build_bundle(model, seed=0)
    load_exported(merged, adapt / "model")
    by_hand = build_bundle(model, seed=0)
    load_exported(by_hand, pretrain / "model")
    base = {k: v.clone() for k, v in by_hand.denoiser.state_dict().items()}
    apply_lora(by_hand, adapt / "model")
    for key, value in merged.denoiser.state_dict().items():
        assert torch.equal(value, by_hand.denoiser.state_dict()[key])
    assert any(not torch.equal(base[k], v) for k, v in merged.denoiser.state_dict().items())
    assert all(p.requires_grad for p in merged.denoiser.parameters())  # a later stage trains all of it


def test_an_adapter_on_another_base_is_refused_with_both_hashes(finished, tmp_path):
    import shutil

    pretrain, adapt = stage_dir(finished, "toy", "pretrain"), stage_dir(finished, "toy", "adapt")
    shutil.copytree(pretrain / "model", tmp_path / "base")
    shutil.copytree(adapt / "model", tmp_path / "adapter")
    weights_file = next((tmp_path / "base" / "denoiser").glob("*.safetensors"))
    state = load_file(str(weights_file))
    key = sorted(state)[0]
    state[key] = state[key] + 1e-3
    save_file(state, str(weights_file))
    info = json.loads((tmp_path / "adapter" / BASE_FILE).read_text())
    (tmp_path / "adapter" / BASE_FILE).write_text(json.dumps({**info, "base": str(tmp_path / "base")}))
    bundle = build_bundle(compile_spec(str(finished / "spec.yaml")).spec.model, seed=0)
    with pytest.raises(ValueError, match=f"trained on base {info['base_hash']}, but the weights it would be applied "
                                         "to hash to [0-9a-f]{16}"):
        load_exported(bundle, tmp_path / "adapter")
    assert (tmp_path / "adapter" / "lora" / WEIGHT_NAME).exists()


def test_a_lora_stage_killed_mid_training_resumes_bitwise(finished, tmp_path):
    write_spec(tmp_path, LORA)
    proc = start("run", "spec.yaml", "--stage", "adapt", cwd=tmp_path)
    kill_after_checkpoint(proc, "runs/toy/adapt-*", tmp_path, 10)
    out = flowspec("run", "spec.yaml", "--stage", "adapt", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    resumed, whole = weights(stage_dir(tmp_path, "toy", "adapt")), weights(stage_dir(finished, "toy", "adapt"))
    assert resumed.keys() == whole.keys() and resumed
    for key in whole:
        assert torch.equal(resumed[key], whole[key]), key


def test_resuming_on_a_base_that_changed_is_refused_at_the_stage(finished, tmp_path):
    """A stage started from a folder path keeps its hash when the folder's weights change: its checkpoints
    say which base they were trained on."""
    import shutil

    shutil.copytree(stage_dir(finished, "toy", "pretrain") / "model", tmp_path / "base")
    spec = PRETRAIN_ONLY.replace("  - {name: pretrain, kind: pretrain, steps: 60}\n",
                                 "  - {name: adapt, kind: finetune, from: base, steps: 40, lora: {rank: 2, "
                                 "targets: all-linear}}\n")
    write_spec(tmp_path, spec.replace("from: base", f"from: {tmp_path / 'base'}"))
    proc = start("run", "spec.yaml", cwd=tmp_path)
    kill_after_checkpoint(proc, "runs/toy/adapt-*", tmp_path, 10)
    weights_file = next((tmp_path / "base" / "denoiser").glob("*.safetensors"))
    state = load_file(str(weights_file))
    save_file({k: v * 1.01 for k, v in state.items()}, str(weights_file))
    out = flowspec("run", "spec.yaml", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "spec.yaml:" in out.stderr and "stages.adapt.from: " in out.stderr
    assert "was trained on frozen base" in out.stderr and "start it afresh with --fresh" in out.stderr


def test_merge_on_export_also_writes_the_merged_model(finished):
    merged, pretrain = stage_dir(finished, "toy", "merged"), stage_dir(finished, "toy", "pretrain")
    assert (merged / "model" / "lora" / WEIGHT_NAME).exists() and (merged / "model" / "denoiser").is_dir()
    model = compile_spec(str(finished / "spec.yaml")).spec.model
    loaded, by_hand = build_bundle(model, seed=0), build_bundle(model, seed=0)
    load_exported(loaded, merged / "model")
    load_exported(by_hand, pretrain / "model")
    apply_lora(by_hand, merged / "model")
    for key, value in loaded.denoiser.state_dict().items():
        assert torch.allclose(value, by_hand.denoiser.state_dict()[key], atol=1e-6), key


def test_sample_with_an_adapter_scale_0_is_the_base_and_scale_1_the_lora_stage(finished, tmp_path, capsys):
    import numpy as np

    from flowspec.cli import main

    pretrain, adapt = stage_dir(finished, "toy", "pretrain"), stage_dir(finished, "toy", "adapt")

    def sample(path, *lora):
        out = tmp_path / f"s{len(list(tmp_path.iterdir()))}.npy"
        assert main(["sample", str(path), "--n", "64", "--out", str(out), *[a for x in lora for a in ("--lora", x)]]) == 0
        return np.load(out)

    base, own = sample(pretrain), sample(adapt)
    assert np.array_equal(sample(pretrain, f"{adapt}:0"), base)
    assert np.array_equal(sample(pretrain, f"{adapt}"), own) and np.array_equal(sample(pretrain, f"{adapt}:1"), own)
    half = sample(pretrain, f"{adapt / 'model'}:0.5")
    assert not np.array_equal(half, base) and not np.array_equal(half, own)
    assert "warning" not in capsys.readouterr().err
    sample(adapt, str(adapt))  # on top of itself: another base than the one it was trained on
    assert f"{adapt / 'model'} was trained on base " in capsys.readouterr().err
    assert main(["sample", str(pretrain), "--lora", str(tmp_path), "--out", str(tmp_path / "x.npy")]) == 2
    assert "no LoRA adapter there" in capsys.readouterr().err


def test_sample_on_a_diffusers_folder_with_the_spec_that_describes_it(finished, tmp_path, capsys):
    import numpy as np

    from flowspec.cli import main

    pretrain, adapt = stage_dir(finished, "toy", "pretrain"), stage_dir(finished, "toy", "adapt")
    spec = str(finished / "spec.yaml")

    def sample(path, *extra):
        out = tmp_path / f"s{len(list(tmp_path.iterdir()))}.npy"
        assert main(["sample", str(path), "--n", "64", "--out", str(out), *extra]) == 0, capsys.readouterr().err
        return np.load(out)

    base, own = sample(pretrain), sample(adapt)
    plain = pretrain / "model" / "denoiser"  # what diffusers' save_pretrained writes, nothing of flowspec's
    assert np.array_equal(sample(plain, "--spec", spec, "--stage", "pretrain"), base)
    assert np.array_equal(sample(pretrain / "model", "--spec", spec, "--stage", "pretrain"), base)
    pipeline = tmp_path / "pipeline"  # a pipeline's folder: the model in its transformer/ subfolder
    shutil.copytree(plain, pipeline / "transformer")
    assert np.array_equal(sample(pipeline, "--spec", spec, "--stage", "pretrain"), base)
    assert np.array_equal(sample(plain, "--spec", spec, "--stage", "adapt", "--lora", f"{adapt}:0"), base)
    assert np.array_equal(sample(plain, "--spec", spec, "--stage", "adapt", "--lora", f"{adapt}:1"), own)
    assert np.array_equal(sample(pretrain / "model"), base)  # an exported model/ folder finds its stage
    assert "warning" not in capsys.readouterr().err

    assert main(["sample", str(plain), "--out", str(tmp_path / "x.npy")]) == 2
    assert "a diffusers folder needs --spec SPEC" in capsys.readouterr().err
    assert main(["sample", str(plain), "--spec", spec, "--stage", "nope", "--out", str(tmp_path / "x.npy")]) == 2
    assert "--stage nope: " in capsys.readouterr().err
    assert main(["sample", str(tmp_path), "--spec", spec, "--out", str(tmp_path / "x.npy")]) == 2
    assert "not a diffusers folder" in capsys.readouterr().err


def test_a_rank_above_a_targeted_layers_width_is_refused_at_the_lora_block(tmp_path):
    write_spec(tmp_path, PRETRAIN_ONLY.replace("steps: 60}", "steps: 60, lora: {rank: 4096, targets: all-linear}}"))
    out = flowspec("run", "spec.yaml", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "spec.yaml:" in out.stderr and "stages.pretrain.lora.rank: rank 4096 exceeds the width of" in out.stderr
    assert not list(tmp_path.glob("runs/toy/pretrain-*/checkpoints/*"))
