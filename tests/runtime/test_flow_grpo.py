"""Flow-GRPO (runtime/objectives/flow_grpo.py) end to end on 2-D points: toy2d_region on one mode of a
two-mode model; the reward rises, full and LoRA; the ratio is exactly 1 on the first inner epoch of each
batch of rollouts; the KL starts at 0 (the reference is the start: a frozen copy, or the LoRA switched
off); a run killed inside a batch of rollouts resumes bitwise; 2 processes give the weights of 1, with
groups that span micro-batches and processes."""
import json

import pytest
import torch

from .helpers import TOY, assert_same_weights, flowspec, kill_and_resume, stage_dir, weights, write_spec

BASE = TOY.replace("  - {name: finetune, kind: finetune, from: pretrain, steps: 20, optimizer: {lr: 1.0e-3}}\n", "")
GRPO = """\
  - name: grpo
    kind: flow_grpo
    from: pretrain
    steps: 30
    group_size: 16
    sampling_steps: 8
    eval_steps: 8
    cfg_scale: 1.0
    clip_range: 0.2
    kl_beta: 0.01
    inner_epochs: 3
    reward: {kind: toy2d_region, centers: [[1, 0]], radius: 0.3}
    optimizer: {lr: 3.0e-3}
    train: {log_every: 1, micro_batch: 8}  # a group spans two micro-batches (and, on 2 processes, both)
"""
LORA = """\
  - name: grpo_lora
    kind: flow_grpo
    from: pretrain
    steps: 30
    group_size: 16
    sampling_steps: 8
    eval_steps: 8
    cfg_scale: 1.0
    clip_range: 0.2
    kl_beta: 0.04
    kl_form: exact
    shared_noise: true
    reward: {kind: toy2d_region, centers: [[1, 0]], radius: 0.3}
    optimizer: {lr: 1.0e-2}
    lora: {rank: 2, targets: all-linear}
    train: {log_every: 1}
    prompt_enhancer: {kind: template, template: "{{ prompt }}a point"}
"""


def metrics(stage) -> list[dict]:
    return [json.loads(line) for line in (stage / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    folder = tmp_path_factory.mktemp("grpo")
    write_spec(folder, BASE + GRPO + LORA)
    out = flowspec("run", "spec.yaml", cwd=folder)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[grpo_lora] prompt enhancer template: '' -> 'a point'" in out.stdout
    return folder


def test_flowspec_sample_applies_the_stages_prompt_enhancer_unless_told_not_to(finished, tmp_path):
    stage = str(stage_dir(finished, "toy", "grpo_lora"))
    out = flowspec("sample", stage, "--out", str(tmp_path / "a.npy"), cwd=finished)
    assert out.returncode == 0 and "prompt enhancer template: '' -> 'a point'" in out.stdout
    out = flowspec("sample", stage, "--no-enhance", "--out", str(tmp_path / "b.npy"), cwd=finished)
    assert out.returncode == 0 and "prompt enhancer" not in out.stdout


@pytest.mark.parametrize("stage", ["grpo", "grpo_lora"])
def test_flow_grpo_raises_the_reward_and_logs_its_statistics(finished, stage):
    folder = stage_dir(finished, "toy", stage)
    scores = json.loads((folder / "eval.json").read_text())
    assert scores["reward"]["mean"] > scores["reward_start"]["mean"] + 0.1, scores
    records = metrics(folder)
    assert all({"reward_mean", "reward_std", "kl", "clip_fraction", "approx_kl"} <= r.keys() for r in records)
    assert records[0]["kl"] == 0.0  # the first step's policy is the reference
    assert max(r["kl"] for r in records) > 0


def test_the_ratio_is_exactly_one_on_the_first_inner_epoch(finished):
    records = metrics(stage_dir(finished, "toy", "grpo"))
    first = [r for r in records if (r["step"] - 1) % 3 == 0]  # record n holds step n - 1 (0-based)
    later = [r for r in records if (r["step"] - 1) % 3]
    assert first and all(r["approx_kl"] == 0.0 and r["clip_fraction"] == 0.0 for r in first)
    assert all(r["approx_kl"] > 0 for r in later)
    # one batch of rollouts serves its three steps: the same rewards
    by_step = {r["step"]: r["reward_mean"] for r in records}
    assert by_step[1] == by_step[2] == by_step[3] != by_step[4]


@pytest.mark.slow  # kill -9 and resume: with the slow tests, to keep the default run under budget
def test_a_run_killed_inside_a_batch_of_rollouts_resumes_bitwise(finished, tmp_path):
    resumed = kill_and_resume(tmp_path, BASE + GRPO, "toy", "grpo", step=10)  # step 10 lies inside rollouts 9-11
    assert_same_weights(resumed, stage_dir(finished, "toy", "grpo"))


@pytest.mark.slow  # two processes from scratch: with the slow tests, to keep the default run under budget
def test_two_processes_give_the_weights_of_one(finished, tmp_path):
    write_spec(tmp_path, BASE + GRPO)
    out = flowspec("run", "spec.yaml", "--stage", "grpo", "--nproc", "2", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    a, b = weights(stage_dir(finished, "toy", "grpo")), weights(stage_dir(tmp_path, "toy", "grpo"))
    worst = max((a[k].double() - b[k].double()).abs().max().item() for k in a)
    assert worst < 2e-4, worst  # the bound of the pre-training parity test (float reassociation)
    one, two = metrics(stage_dir(finished, "toy", "grpo")), metrics(stage_dir(tmp_path, "toy", "grpo"))
    assert [r["reward_mean"] for r in one] == pytest.approx([r["reward_mean"] for r in two], abs=1e-5)


def test_a_group_takes_the_caption_of_its_first_row_of_the_global_batch():
    import types

    from flowspec.runtime.data.stream import Batch
    from flowspec.runtime.distributed import SINGLE
    from flowspec.runtime.objectives.flow_grpo import FlowGRPO

    def batch(offset, captions):
        return Batch(x=torch.zeros(len(captions), 2), captions=captions, class_labels=None, height=0, width=0, phase=0,
                     offset=offset, total=8)

    owner = types.SimpleNamespace(dist=SINGLE, stage=types.SimpleNamespace(group_size=4))
    # micro-batches of 2 rows, in the order a process meets them (not the global batch's)
    batches = [batch(4, ["e", "f"]), batch(0, ["a", "b"]), batch(6, ["g", "h"]), batch(2, ["c", "d"])]
    assert FlowGRPO.group_prompts(owner, batches) == ["a"] * 4 + ["e"] * 4
