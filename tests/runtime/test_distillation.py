"""Every distillation kind runs on the toy chain and writes its report (student at 1, 2, 4 steps and its own,
teacher at 8, its own and the student's own); the round's teacher, the consistency target and the discriminator are checkpointed
(a run killed mid-stage resumes bitwise); the student samples on its nested grid without guidance."""
import json

import pytest

from flowspec.compiler import SpecError, compile_spec

from .helpers import TOY, assert_same_weights, flowspec, kill_and_resume, stage_dir, write_spec

BASE = TOY.replace("  - {name: finetune, kind: finetune, from: pretrain, steps: 20, optimizer: {lr: 1.0e-3}}\n", "")
PROGRESSIVE = "  - {name: prog, kind: progressive_distill, from: pretrain, steps: 12, teacher_steps: 8, rounds: 2, train: {checkpoint: {every: 5}, samples: {num_steps: 2}}}\n"
KINDS = PROGRESSIVE + """\
  - {name: reflow, kind: reflow, from: pretrain, steps: 10, num_pairs: 128, teacher_steps: 8, train: {samples: {num_steps: 2}}}
  - {name: insta, kind: reflow, from: reflow, steps: 10, num_pairs: 64, teacher_steps: 2, one_step: true, train: {samples: {num_steps: 1}}}
  - {name: lcm, kind: consistency_distill, from: pretrain, steps: 12, num_timesteps: 10, skip: 100, w_range: [1.0, 1.0], ema_decay: 0.9, loss: huber, train: {checkpoint: {every: 5}, samples: {solver: consistency, num_steps: 2}}}
  - {name: add, kind: adversarial_distill, from: pretrain, steps: 12, train: {checkpoint: {every: 5}}}
  - {name: dmd, kind: distribution_matching, from: pretrain, steps: 12, fake_updates: 2, gan_weight: 0.01, student_timesteps: [1.0, 0.5], train: {checkpoint: {every: 5}}}
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    folder = tmp_path_factory.mktemp("distill")
    write_spec(folder, BASE + KINDS)
    out = flowspec("run", "spec.yaml", cwd=folder)
    assert out.returncode == 0, out.stdout + out.stderr
    return folder


def report(folder, stage) -> dict:
    return json.loads((stage_dir(folder, "toy", stage) / "distill_report.json").read_text())


@pytest.mark.parametrize("stage,own,teacher_own", [("prog", 2, 8), ("reflow", 2, 8), ("insta", 1, 2), ("lcm", 2, 8),
                                                   ("add", 8, 8), ("dmd", 8, 8)])
def test_every_kind_reports_its_student_against_its_teacher(finished, stage, own, teacher_own):
    rows = report(finished, stage)["rows"]
    students = [r for r in rows if r["model"] == "student"]
    teachers = [r for r in rows if r["model"] == "teacher"]
    assert sorted(r["steps"] for r in students) == sorted({1, 2, 4, own})
    assert sorted(r["steps"] for r in teachers) == sorted({8, teacher_own, own})
    assert all(r["grid"] == "nested" and r["cfg_scale"] == 1.0 and r["nfe"] == r["steps"] for r in students)
    for row in rows:
        assert row["sliced_wasserstein"] > 0 and row["seconds_per_sample"] > 0
    text = (stage_dir(finished, "toy", stage) / "report.md").read_text()
    assert "Distillation report" in text and (stage_dir(finished, "toy", stage) / "distill_report.png").exists()


def test_reflow_straightens_the_field_of_its_start(finished):
    straightness = report(finished, "reflow")["straightness"]
    assert straightness["student"] < straightness["start"]


def test_the_consistency_student_samples_with_its_solver_in_its_report_and_in_flowspec_sample(finished, tmp_path):
    rows = report(finished, "lcm")["rows"]
    assert {r["solver"] for r in rows if r["model"] == "student"} == {"consistency"}
    out = flowspec("sample", str(stage_dir(finished, "toy", "lcm")), "--n", "16", "--out", str(tmp_path / "a.npy"),
                   cwd=finished)
    assert out.returncode == 0, out.stderr
    assert "num_steps=2, solver='consistency', cfg_scale=1.0" in out.stdout and "grid='nested'" in out.stdout


@pytest.mark.slow  # a kill-and-resume run (about 40 s): with the slow tests, to keep the default run under budget
def test_a_progressive_run_killed_in_its_second_round_resumes_bitwise(finished, tmp_path):
    resumed = kill_and_resume(tmp_path, BASE + PROGRESSIVE, "toy", "prog", step=10)  # round 2 starts at step 6
    assert_same_weights(resumed, stage_dir(finished, "toy", "prog"))


@pytest.mark.slow  # three more kill-and-resume runs: with the slow tests, to keep the default run under budget
@pytest.mark.parametrize("stage", ["lcm", pytest.param("add", marks=pytest.mark.extended), pytest.param("dmd", marks=pytest.mark.extended)])
def test_a_run_killed_mid_stage_resumes_bitwise_with_its_extra_state(finished, tmp_path, stage):
    line = next(line for line in KINDS.splitlines(keepends=True) if f"name: {stage}," in line)
    resumed = kill_and_resume(tmp_path, BASE + line, "toy", stage, step=5)
    assert_same_weights(resumed, stage_dir(finished, "toy", stage))


def test_skip_beyond_the_grid_and_guidance_beside_w_range_are_refused(tmp_path):
    bad = BASE + "  - {name: lcm, kind: consistency_distill, from: pretrain, steps: 4, num_timesteps: 50, skip: 30, cfg_scale: 3}\n"
    path = write_spec(tmp_path, bad)
    with pytest.raises(SpecError) as caught:
        compile_spec(str(path))
    keys = {issue.path for issue in caught.value.issues}
    assert {"stages.lcm.skip", "stages.lcm.cfg_scale"} <= keys


def test_a_teacher_of_another_family_is_refused_at_its_key_naming_both(tmp_path):
    other = tmp_path / "other" / "denoiser"
    other.mkdir(parents=True)
    (other / "config.json").write_text(json.dumps({"_class_name": "SD3Transformer2DModel", "in_channels": 16}))
    write_spec(tmp_path, BASE + "  - {name: lcm, kind: consistency_distill, from: pretrain, steps: 8, teacher: other/}\n")
    out = flowspec("run", "spec.yaml", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "stages.lcm.teacher: other holds a SD3Transformer2DModel with 16 latent channels" in out.stderr
    assert "this spec's model is a VelocityMLP (mlp) with 2" in out.stderr


@pytest.mark.slow  # an image model's pre-training first (about 20 s): with the slow tests
def test_an_add_encoder_that_cannot_be_loaded_offline_is_refused_at_its_key(tmp_path):
    from .helpers import IMAGE

    spec = IMAGE + ("  - {name: add, kind: adversarial_distill, from: pretrain, steps: 2,"
                    " discriminator: {encoder: {kind: dinov2, path: no/dinov2}}}\n")
    write_spec(tmp_path, spec.replace("steps: 16}", "steps: 2}").replace("{at_step: 8, resolution: 16", "{at_step: 1, resolution: 16"))
    out = flowspec("run", "spec.yaml", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "stages.add.discriminator.encoder: the dinov2 encoder cannot be loaded offline: no/dinov2" in out.stderr
