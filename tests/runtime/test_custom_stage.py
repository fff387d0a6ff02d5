"""`kind: custom`: a user's objective class on the shared loop (examples/custom_stage): its options are
checked like any key, it trains exactly as a built-in objective does, and it resumes bitwise after kill -9."""
import importlib
import shutil
import sys

import pytest
import torch

from flowspec.compiler import SpecError, compile_spec

from .helpers import flowspec, kill_after_checkpoint, stage_dir, start, weights

EXAMPLE = "examples/custom_stage"
SHORT = ["--set", "stages.pretrain.steps=40", "--set", "stages.detail.steps=30", "--set", "train.checkpoint.every=10",
         "--set", "optimizer.schedule.warmup_steps=5"]


def example(tmp_path, root, name="run"):
    folder = tmp_path / name
    shutil.copytree(root / EXAMPLE, folder, ignore=shutil.ignore_patterns("runs", "__pycache__"))
    return folder


def errors(path, *sets):
    with pytest.raises(SpecError) as caught:
        compile_spec(str(path), None, sets)
    return [str(issue) for issue in caught.value.issues]


def test_options_and_target_are_checked_at_their_lines(tmp_path, root):
    folder = example(tmp_path, root)
    spec = folder / "spec.yaml"
    lines = spec.read_text().splitlines()
    target = next(i for i, line in enumerate(lines, 1) if line.strip().startswith("target:"))
    assert errors(spec, "stages.detail.options={powr: 2}") == [
        f"--set stages.detail.options={{powr: 2}}: stages.detail.options.powr: unknown option 'powr' "
        "(did you mean 'power'?)"]
    assert errors(spec, "stages.detail.options.floor=0") == [
        "--set stages.detail.options.floor=0: stages.detail.options.floor: input should be greater than 0"]
    missing = errors(spec, "stages.detail.target=weighted_fn:WeightedFlowMatching")
    assert len(missing) == 1 and "stages.detail.target: cannot import module 'weighted_fn'" in missing[0]
    assert errors(spec, "stages.detail.target=weighted_fm:Nothing")[0].endswith("has no 'Nothing'")
    (folder / "weighted_fm.py").write_text((folder / "weighted_fm.py").read_text().replace(
        'model_config = ConfigDict(extra="forbid")', "pass"))
    sys.modules.pop("weighted_fm", None)
    importlib.invalidate_caches()
    loose = errors(spec)
    sys.modules.pop("weighted_fm", None)
    assert len(loose) == 1 and loose[0].startswith(f"{spec}:{target}:") and "must refuse unknown keys" in loose[0]


@pytest.mark.slow  # three trainings (about 30 s): the default run stays under 20 minutes
def test_a_unit_weight_trains_exactly_as_pretrain_and_the_option_changes_it(tmp_path, root):
    folder = example(tmp_path, root)
    base = ["--set", "stages=[{name: detail, kind: pretrain, steps: 30}]", "--set", "optimizer.schedule.warmup_steps=5"]
    custom = ["--set", "stages=[{name: detail, kind: custom, target: 'weighted_fm:WeightedFlowMatching', steps: 30, "
              "options: {floor: 1.0}}]", "--set", "optimizer.schedule.warmup_steps=5"]
    runs = {}
    for name, sets in (("builtin", base), ("unit", custom), ("weighted", [*custom[:1], custom[1].replace(
            "floor: 1.0", "floor: 0.1, power: 2.0"), *custom[2:]])):
        out = flowspec("run", "spec.yaml", *sets, "--set", f"output_dir={name}", cwd=folder)
        assert out.returncode == 0, out.stderr
        runs[name] = weights(next((folder / name / "custom_stage").glob("detail-*")))
    assert runs["builtin"].keys() == runs["unit"].keys()
    assert all(torch.equal(runs["builtin"][k], runs["unit"][k]) for k in runs["builtin"])
    assert not all(torch.equal(runs["builtin"][k], runs["weighted"][k]) for k in runs["builtin"])


@pytest.mark.slow  # about 30 s: the default run is at its budget
def test_a_custom_stage_killed_mid_training_resumes_bitwise(tmp_path, root):
    ref, run = example(tmp_path, root, "ref"), example(tmp_path, root, "resumed")
    done = flowspec("run", "spec.yaml", *SHORT, cwd=ref)
    assert done.returncode == 0, done.stderr
    proc = start("run", "spec.yaml", *SHORT, cwd=run)
    kill_after_checkpoint(proc, "runs/custom_stage/detail-*", run, 10)
    assert not list(run.glob("runs/custom_stage/detail-*/DONE"))
    again = flowspec("run", "spec.yaml", *SHORT, cwd=run)
    assert again.returncode == 0, again.stderr
    assert "[detail] resumed from step" in again.stdout
    a, b = weights(stage_dir(ref, "custom_stage", "detail")), weights(stage_dir(run, "custom_stage", "detail"))
    assert a.keys() == b.keys() and a and all(torch.equal(a[k], b[k]) for k in a)
    assert (stage_dir(run, "custom_stage", "detail") / "eval.json").exists()  # evaluation comes with the loop


def test_sharding_a_custom_objective_is_refused_at_the_key(tmp_path, root):
    folder = example(tmp_path, root)
    spec = next(folder.glob("*.yaml"))
    found = errors(spec, "stages.detail.train.sharding=fsdp")
    assert len(found) == 1
    assert ("stages.detail.train.sharding: sharding fsdp runs the built-in stage kinds, not yet the custom "
            "objective weighted_fm:WeightedFlowMatching: use sharding: none") in found[0]
