"""A preference stage's `gold:` evaluation (runtime/ops/gold.py) on 2-D points: ReFL rewarded for a region
away from the data (the training reward rises) while gold, the data's own modes, falls; with
stop_when_gold_drops the stage finishes early and exports the weights of its best gold evaluation; a run
killed on the way resumes to the same gold history and the same weights."""
import json

import pytest
import torch

from .helpers import TOY, assert_same_weights, flowspec, kill_and_resume, stage_dir, weights, write_spec

BASE = TOY.replace("  - {name: finetune, kind: finetune, from: pretrain, steps: 20, optimizer: {lr: 1.0e-3}}\n", "")
HACK = """\
  - name: hack
    kind: reward_feedback
    from: pretrain
    steps: 60
    sampling_steps: 8
    grad_steps: [5, 7]
    grad_scale: 1.0
    reward_margin: 0.0
    pretrain_loss_weight: 0.0
    reward: {kind: toy2d_region, centers: [[3, 0]], radius: 0.2}
    gold: {reward: {kind: toy2d_region, centers: [[-1, 0], [1, 0]], radius: 0.3}, every: 10, stop_when_gold_drops: 2}
    optimizer: {lr: 3.0e-3}
"""


def history(folder) -> list[dict]:
    return json.loads((folder / "gold.json").read_text())["history"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gold")
    write_spec(folder, BASE + HACK)
    out = flowspec("run", "spec.yaml", cwd=folder)
    assert out.returncode == 0, out.stdout + out.stderr
    return folder, out.stdout


def test_the_stage_stops_when_gold_falls_while_the_reward_rises_and_exports_the_best(finished):
    folder, log = finished
    hack = stage_dir(folder, "toy", "hack")
    gold = history(hack)
    best = max(gold, key=lambda h: h["gold"])
    assert [h["step"] for h in gold] == [0, 10, 20, 30][:len(gold)] and len(gold) == best["step"] // 10 + 3
    assert all(h["gold"] < best["gold"] for h in gold if h["step"] > best["step"])
    last = gold[-1]["step"]
    assert f"[hack] finished early at step {last}" in log
    rewards = [json.loads(line)["reward"] for line in (hack / "metrics.jsonl").read_text().splitlines()]
    assert rewards[-1] > rewards[0] + 0.5  # the training reward kept rising
    results = json.loads((hack / "results.json").read_text())["gold"]
    assert results["best"] == best and results["finished_early_at"] == last
    checkpoints = sorted((hack / "checkpoints").iterdir())
    assert checkpoints and str(last) in checkpoints[-1].name
    from safetensors.torch import load_file

    kept = load_file(str(hack / "gold_best.safetensors"))  # the best evaluation's weights, as evaluated
    exported = weights(hack)
    assert kept and all(torch.equal(exported[k.replace("denoiser.net.", "denoiser/", 1)], v) for k, v in kept.items())
    assert f"[hack] exporting the weights of step {best['step']}, the best by gold" in log
    scores = json.loads((hack / "eval.json").read_text())
    assert scores["reward"]["mean"] < rewards[-1]  # what is exported is not what the reward liked


@pytest.mark.slow  # a second run of the stage: with the slow tests, to keep the default run under budget
def test_without_the_stop_every_step_trains_and_gold_is_logged(tmp_path):
    write_spec(tmp_path, BASE + HACK.replace(", stop_when_gold_drops: 2", ""))
    out = flowspec("run", "spec.yaml", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    hack = stage_dir(tmp_path, "toy", "hack")
    assert [h["step"] for h in history(hack)] == [0, 10, 20, 30, 40, 50, 60] and "finished early" not in out.stdout


@pytest.mark.slow  # kill -9 and resume: with the slow tests, to keep the default run under budget
def test_a_run_killed_before_the_stop_resumes_to_the_same_history_and_weights(finished, tmp_path):
    a, b = kill_and_resume(tmp_path, BASE + HACK, "toy", "hack"), stage_dir(finished[0], "toy", "hack")
    assert history(a) == history(b)
    assert_same_weights(a, b)
