"""DreamBooth: the subject's images under the instance prompt plus prior preservation on class images the
frozen start generates once (content-keyed cache); lambda = 0 trains exactly as plain fine-tuning on the
subject does."""
import numpy as np
import pytest
import torch

from .helpers import TINY_IMAGE_MODEL, flowspec, stage_dir, weights, write_spec

SPEC = """\
flowspec: 1
name: db
seed: 5
""" + TINY_IMAGE_MODEL + """\
data:
  source: {kind: shapes, num_images: 64}
  curriculum: [{at_step: 0, resolution: 16, complexity: [1, 1]}]
optimizer: {kind: adamw, lr: 1.0e-3}
train:
  global_batch: 4
  checkpoint: {every: 2}
  samples: {every: 100, num_steps: 2, per_prompt: 1, prompts: ["a red circle"]}
stages:
  - {name: pretrain, kind: pretrain, steps: 4}
  - name: subject
    kind: dreambooth
    from: pretrain
    steps: 6
    instance_data: {kind: shapes, num_images: 4}
    instance_prompt: "a photo of sks shape"
    PRIOR
    lora: {rank: 2}
"""
PRIOR = 'prior: {class_prompt: "a photo of a shape", num_images: 6, sampling_steps: 2, lambda: LAMBDA}'


def run(folder, prior: str) -> dict:
    folder.mkdir()
    write_spec(folder, SPEC.replace("PRIOR", prior))
    out = flowspec("run", "spec.yaml", cwd=folder)
    assert out.returncode == 0, out.stdout + out.stderr
    return {"log": out.stdout, "weights": weights(stage_dir(folder, "db", "subject"))}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow  # three DreamBooth runs: with the slow tests, to keep the default run under budget
def test_lambda_zero_is_plain_fine_tuning_on_the_subject_and_lambda_one_is_not(tmp_path):
    none = run(tmp_path / "none", "prior: null")
    zero = run(tmp_path / "zero", PRIOR.replace("LAMBDA", "0.0"))
    one = run(tmp_path / "one", PRIOR.replace("LAMBDA", "1.0"))
    assert "instance data: 4 image(s) of shapes, captioned 'a photo of sks shape'" in zero["log"]
    assert same(none["weights"], zero["weights"])
    grid = tmp_path / "one" / "runs" / "db"
    assert len(list(grid.glob("subject-*/samples/subject-step-00000006.png"))) == 1  # the subject grid, at the end
    assert not same(zero["weights"], one["weights"])


@pytest.mark.slow  # three DreamBooth runs: with the slow tests, to keep the default run under budget
def test_class_images_are_generated_once_and_again_only_for_another_class_prompt(tmp_path):
    cache = tmp_path / "shared-cache"
    prior = PRIOR.replace("LAMBDA", "1.0")
    spec = lambda folder: (folder / "spec.yaml").write_text(  # every run reads the one cache folder
        (folder / "spec.yaml").read_text().replace("data:\n  source:", f"data:\n  cache: {{dir: {cache}}}\n  source:"))
    first = tmp_path / "first"
    first.mkdir()
    write_spec(first, SPEC.replace("PRIOR", prior))
    spec(first)
    out = flowspec("run", "spec.yaml", cwd=first)
    assert out.returncode == 0 and "6 class image(s) of 'a photo of a shape' generated" in out.stdout, out.stderr
    files = list((cache / "dreambooth_prior").glob("*.npy"))
    assert len(files) == 1
    images = np.load(files[0])
    assert images.shape == (6, 16, 16, 3) and images.dtype == np.uint8
    second = tmp_path / "second"
    second.mkdir()
    write_spec(second, SPEC.replace("PRIOR", prior))
    spec(second)
    out = flowspec("run", "spec.yaml", cwd=second)
    assert "generated" not in out.stdout and "6 class image(s) of 'a photo of a shape' cached" in out.stdout
    assert same(weights(stage_dir(first, "db", "subject")), weights(stage_dir(second, "db", "subject")))
    assert np.array_equal(np.load(files[0]), images)  # nothing rewrote them
    third = tmp_path / "third"
    third.mkdir()
    write_spec(third, SPEC.replace("PRIOR", prior.replace("a photo of a shape", "a photo of a thing")))
    spec(third)
    out = flowspec("run", "spec.yaml", cwd=third)
    assert "of 'a photo of a thing' generated" in out.stdout and len(list((cache / "dreambooth_prior").glob("*.npy"))) == 2


@pytest.mark.slow  # 32 s; LoRA-stage resume (tests/runtime/test_lora_stage.py) stays in the default run
def test_a_dreambooth_stage_killed_mid_training_resumes_bitwise_without_generating_again(tmp_path):
    from .helpers import kill_after_checkpoint, start

    prior = PRIOR.replace("LAMBDA", "1.0")
    whole = run(tmp_path / "whole", prior)
    folder = tmp_path / "killed"
    folder.mkdir()
    write_spec(folder, SPEC.replace("PRIOR", prior))  # checkpoints every 2 steps
    proc = start("run", "spec.yaml", cwd=folder)
    kill_after_checkpoint(proc, "runs/db/subject-*", folder, 2)
    out = flowspec("run", "spec.yaml", cwd=folder)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "class image(s) of 'a photo of a shape' cached" in out.stdout
    assert same(weights(stage_dir(folder, "db", "subject")), whole["weights"])
