"""ReFL (runtime/objectives/reward_feedback.py) end to end on 2-D points: a reward_feedback stage with
toy2d_region on one mode of a two-mode model raises the reward on the evaluation's fixed prompts and seeds
(measured at the start and at the end), with LoRA too, and resumes bitwise after kill -9."""
import json

import pytest

from .helpers import TOY, assert_same_weights, flowspec, kill_and_resume, stage_dir, write_spec

BASE = TOY.replace("  - {name: finetune, kind: finetune, from: pretrain, steps: 20, optimizer: {lr: 1.0e-3}}\n", "")
REFL = BASE + """\
  - name: refl
    kind: reward_feedback
    from: pretrain
    steps: 30
    sampling_steps: 8
    grad_steps: [5, 7]
    grad_scale: 1.0
    reward_margin: 0.0
    pretrain_loss_weight: 0.5
    reward: {kind: toy2d_region, centers: [[1, 0]], radius: 0.3}
    optimizer: {lr: 3.0e-3}
  - name: refl_lora
    kind: reward_feedback
    from: pretrain
    steps: 30
    sampling_steps: 8
    grad_steps: [7, 7]
    grad_scale: 1.0
    reward_margin: 0.0
    pretrain_loss_weight: 0.0
    reward: {kind: toy2d_region, centers: [[1, 0]], radius: 0.3}
    optimizer: {lr: 1.0e-2}
    lora: {rank: 2, targets: all-linear}
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    folder = tmp_path_factory.mktemp("refl")
    write_spec(folder, REFL)
    out = flowspec("run", "spec.yaml", cwd=folder)
    assert out.returncode == 0, out.stdout + out.stderr
    return folder, out.stdout


@pytest.mark.parametrize("stage", ["refl", "refl_lora"])
def test_reward_feedback_raises_the_reward_on_the_evaluation(finished, stage):
    folder, log = finished
    scores = json.loads((stage_dir(folder, "toy", stage) / "eval.json").read_text())
    start, end = scores["reward_start"], scores["reward"]
    assert start["items"] == end["items"] == 2000
    assert end["mean"] > start["mean"] + 0.1, (start, end)
    assert f"[{stage}] reward: toy2d_region (differentiable); the starting model scores {start['mean']:.4g}" in log
    metrics = [json.loads(line) for line in (stage_dir(folder, "toy", stage) / "metrics.jsonl").read_text().splitlines()]
    assert all({"reward", "reward_loss", "grad_step"} <= m.keys() for m in metrics)
    assert ("fm_loss" in metrics[0]) == (stage == "refl")  # the real-data term only where weighted


@pytest.mark.slow  # kill -9 and resume: with the slow tests, to keep the default run under budget
def test_a_reward_feedback_stage_killed_mid_training_resumes_bitwise(finished, tmp_path):
    resumed = kill_and_resume(tmp_path, REFL, "toy", "refl")
    assert_same_weights(resumed, stage_dir(finished[0], "toy", "refl"))


def test_a_reward_that_is_not_differentiable_is_refused_at_its_line(tmp_path):
    write_spec(tmp_path, REFL.replace("reward: {kind: toy2d_region, centers: [[1, 0]], radius: 0.3}\n    optimizer: "
                                      "{lr: 3.0e-3}", "reward: {kind: module, target: 'plug:score'}\n    optimizer: {lr: 3.0e-3}"))
    (tmp_path / "plug.py").write_text("def score(items, prompts):\n    return items[:, 0]\n")
    out = flowspec("validate", "spec.yaml", cwd=tmp_path)
    assert out.returncode == 2 and "ReFL back-propagates through the reward, but module is not differentiable" in out.stderr
