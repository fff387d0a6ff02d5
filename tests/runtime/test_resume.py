"""Exact resume: a run killed with SIGKILL and started again ends bitwise identical to an uninterrupted one."""
import json

import pytest
import torch

from .helpers import IMAGE, TOY, flowspec, kill_after_checkpoint, stage_dir, start, weights, write_spec


def reference_and_resumed(tmp_path, text, spec_name, stage, kill_at):
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "resumed"
    ref_dir.mkdir(), run_dir.mkdir()
    write_spec(ref_dir, text), write_spec(run_dir, text)
    done = flowspec("run", "spec.yaml", cwd=ref_dir)
    assert done.returncode == 0, done.stderr
    proc = start("run", "spec.yaml", cwd=run_dir)
    kill_after_checkpoint(proc, f"runs/{spec_name}/{stage}-*", run_dir, kill_at)
    assert not list(run_dir.glob(f"runs/{spec_name}/{stage}-*/DONE"))
    again = flowspec("run", "spec.yaml", cwd=run_dir)
    assert again.returncode == 0, again.stderr
    assert "resumed from step" in again.stdout
    return stage_dir(ref_dir, spec_name, stage), stage_dir(run_dir, spec_name, stage)


def assert_identical(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() and wa
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def test_toy_run_killed_mid_training_resumes_bitwise(tmp_path):
    ref, resumed = reference_and_resumed(tmp_path, TOY, "toy", "pretrain", kill_at=20)
    assert_identical(ref, resumed)
    # the chain continues from the resumed stage exactly as well
    assert_identical(stage_dir(tmp_path / "ref", "toy", "finetune"), stage_dir(tmp_path / "resumed", "toy", "finetune"))
    steps = [json.loads(line)["step"] for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 60  # no duplicated or missing log lines


@pytest.mark.slow
def test_image_run_with_text_encoder_ema_and_curriculum_resumes_bitwise(tmp_path):
    ref, resumed = reference_and_resumed(tmp_path, IMAGE, "img", "pretrain", kill_at=6)
    assert_identical(ref, resumed)
    # the curriculum's phase change (at step 8) lands on the same step after the resume
    phases = lambda run: [(r["step"], r["phase"], r["resolution"]) for r in
                          map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]
    logged = [(s, p) for s, p, _ in phases(ref)]  # step s is logged after 0-based step s - 1 ran
    assert phases(resumed) == phases(ref) and (8, 0) in logged and (10, 1) in logged
    assert any(k.startswith("text_encoder/") for k in weights(ref))
