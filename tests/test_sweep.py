"""`--sweep`: members, names, the manifest, shared stages and every refusal, without training anything
(tests/runtime/test_sweep_run.py trains a sweep; tests/slurm/test_sweep_slurm.py submits one)."""
import json
import os
from pathlib import Path

import pytest

from flowspec.cli import main
from flowspec.compiler.sweep import expand, member_names, parse_axes, split_values
from flowspec.runtime.executors.sweep import link, sweep_status, write_manifest

from .runtime.helpers import TOY

LR = "stages.finetune.optimizer.lr"  # read by the second stage only: both members share the first


@pytest.fixture
def spec(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec.yaml").write_text(TOY)
    return "spec.yaml"


def errors(capsys, *argv) -> str:
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_values_split_at_top_level_commas_only():
    assert split_values("1e-4, 3e-4") == ["1e-4", "3e-4"]
    assert split_values("[1, 2],{kind: sgd, lr: 1},'a,b'") == ["[1, 2]", "{kind: sgd, lr: 1}", "'a,b'"]


def test_the_cross_product_is_named_by_the_shortest_tail_of_each_key():
    axes = parse_axes(["optimizer.lr=1e-4,3e-4", "train.global_batch=32,64"])
    assert member_names("toy2d", axes) == [
        ("toy2d-lr1e-4-global_batch32", {"optimizer.lr": "1e-4", "train.global_batch": "32"}),
        ("toy2d-lr1e-4-global_batch64", {"optimizer.lr": "1e-4", "train.global_batch": "64"}),
        ("toy2d-lr3e-4-global_batch32", {"optimizer.lr": "3e-4", "train.global_batch": "32"}),
        ("toy2d-lr3e-4-global_batch64", {"optimizer.lr": "3e-4", "train.global_batch": "64"})]
    # two keys ending alike are told apart by more of their tails; values that are no file name are numbered
    names = [n for n, _ in member_names("t", parse_axes(["stages.pretrain.optimizer.lr=1", "optimizer.lr=2",
                                                         "timesteps.sampler={kind: uniform},{kind: mode}"]))]
    assert names == ["t-pretrain.optimizer.lr1-optimizer.lr2-samplerkind_uniform",
                     "t-pretrain.optimizer.lr1-optimizer.lr2-samplerkind_mode"]
    assert [n for n, _ in member_names("t", parse_axes(["train.global_batch=[1, 2],[1,2]"]))] == \
        ["t-global_batchv1", "t-global_batchv2"]


def test_plan_lists_every_member_with_its_folder_and_shares_the_common_stage(spec, capsys):
    assert main(["plan", spec, "--no-estimate", "--json", "--sweep", f"{LR}=1e-3,2e-3",
                 "--sweep", "stages.pretrain.steps=40,60"]) == 0
    out = json.loads(capsys.readouterr().out)
    runs = out["sweep"]["runs"]
    assert out["sweep"]["spec"] == spec and out["sweep"]["axes"] == {LR: ["1e-3", "2e-3"],
                                                                     "stages.pretrain.steps": ["40", "60"]}
    assert [r["name"] for r in runs] == ["toy-lr1e-3-steps40", "toy-lr1e-3-steps60", "toy-lr2e-3-steps40",
                                         "toy-lr2e-3-steps60"]
    assert runs[2]["folder"] == "../toy-lr2e-3-steps40" and runs[2]["overrides"] == {LR: "2e-3",
                                                                                      "stages.pretrain.steps": "40"}
    plans = out["plans"]
    assert [p["spec"]["name"] for p in plans] == [r["name"] for r in runs]
    assert plans[2]["stages"][0]["run_dir"] == f"runs/toy-lr2e-3-steps40/{runs[2]['stages']['pretrain']}"
    assert plans[1]["spec"]["stages"][0]["steps"] == 60 and plans[2]["spec"]["stages"][1]["optimizer"]["lr"] == 2e-3
    # the pretrain stage of 40 steps is the same in the first and third member: trained by the first
    pre = [p["stages"][0]["hash"] for p in plans]
    assert pre[0] == pre[2] != pre[1] == pre[3]
    assert runs[2]["shared"] == {"pretrain": f"../toy-lr1e-3-steps40/{runs[0]['stages']['pretrain']}"}
    assert runs[0]["shared"] == runs[1]["shared"] == {}
    assert len({p["stages"][1]["hash"] for p in plans}) == 4


def test_a_stage_finished_by_another_member_is_a_hit_and_is_linked_not_copied(spec, capsys):
    sweep = expand(spec, None, [], [f"{LR}=1e-3,2e-3"])
    first, second = (m.plan.stage("pretrain").run_dir for m in sweep.members)
    assert sweep.links == {second: first}
    Path(first).mkdir(parents=True)
    (Path(first) / "DONE").write_text("{}")
    assert main(["plan", spec, "--no-estimate", "--sweep", f"{LR}=1e-3,2e-3"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith("pretrain  ")]
    assert [row[-1] for row in rows] == ["hit", "hit"]
    assert f"shared: {second} -> {first}" in out
    link(sweep)
    assert os.readlink(second) == f"../toy-lr1e-3/{Path(first).name}" and (Path(second) / "DONE").exists()
    link(sweep)  # again: nothing changes


def test_a_finished_stage_of_an_earlier_run_owns_it_and_a_members_own_folder_is_never_replaced(spec):
    plain = expand(spec, None, [], [f"{LR}=1e-3,2e-3"]).members[0].plan.stage("pretrain").run_dir
    earlier = Path("runs/toy") / Path(plain).name  # `flowspec run spec.yaml` finished it before the sweep
    earlier.mkdir(parents=True)
    (earlier / "DONE").write_text("{}")
    own = Path("runs/toy-lr2e-3") / Path(plain).name
    own.mkdir(parents=True)  # started by hand before: kept, it runs itself
    sweep = expand(spec, None, [], [f"{LR}=1e-3,2e-3"])
    assert sweep.links == {plain: str(earlier)}
    link(sweep)
    assert Path(plain).is_symlink() and not own.is_symlink()


def test_an_unknown_key_is_located_at_its_sweep_with_did_you_mean(spec, capsys):
    err = errors(capsys, "run", spec, "--sweep", "stages.finetune.optimizer.lrr=1e-3,2e-3")
    assert err.splitlines()[0] == ("--sweep stages.finetune.optimizer.lrr=1e-3,2e-3: stages.finetune.optimizer.lrr: "
                                   "unknown key 'lrr' (did you mean 'lr'?)")
    assert err.count("unknown key") == 1 and not Path("runs").exists()


def test_one_bad_value_stops_every_member_and_names_it(spec, capsys):
    err = errors(capsys, "run", spec, "--sweep", f"{LR}=1e-3,fast,2e-3")
    assert f"--sweep {LR}=1e-3,fast,2e-3: {LR}: " in err
    assert f"(sweep member toy-lrfast: {LR}=fast)" in err and "toy-lr1e-3" not in err
    assert not Path("runs").exists()  # nothing ran, nothing was written


@pytest.mark.parametrize("args,message", [
    ([f"{LR}="], "the list of values is empty"),
    ([f"{LR}=1e-3,,2e-3"], "value 2 of 3 is empty"),
    ([f"{LR}"], "expected --sweep dotted.key=value1,value2"),
    ([f"{LR}=1e-3", f"{LR}=2e-3"], "this key is swept twice"),
    (["stages.finetune.optimizer=1", f"{LR}=2e-3"], "overlaps --sweep stages.finetune.optimizer"),
    (["name=a,b"], "each member's name is made from its values"),
    ([f"{LR}=[1, 2"], "value is not valid YAML"),
])
def test_malformed_sweeps_are_refused(spec, capsys, args, message):
    err = errors(capsys, "plan", spec, "--no-estimate", *[a for arg in args for a in ("--sweep", arg)])
    assert err.startswith(f"--sweep {args[-1]}") and message in err, err


def test_a_key_both_set_and_swept_is_refused(spec, capsys):
    err = errors(capsys, "plan", spec, "--no-estimate", "--set", f"{LR}=1e-3", "--sweep", f"{LR}=1e-3,2e-3")
    assert "also given with --set" in err


@pytest.mark.parametrize("values", ["1e-4,0.0001", "1e-4,2e-4,1.0e-4"])
def test_members_that_are_the_same_spec_are_refused_by_name(spec, capsys, values):
    err = errors(capsys, "run", spec, "--sweep", f"{LR}={values}")
    same = [v for v in values.split(",") if float(v) == 1e-4]
    assert f"sweep members toy-lr{same[0]} ({LR}={same[0]}); toy-lr{same[1]} ({LR}={same[1]}) are the same spec" in err
    assert "toy-lr2e-4" not in err and not Path("runs").exists()


def test_members_that_differ_only_where_no_hash_looks_are_the_same_spec(spec, capsys):
    err = errors(capsys, "plan", spec, "--no-estimate", "--sweep", "train.log_every=5,10")
    assert "toy-log_every5 (train.log_every=5); toy-log_every10 (train.log_every=10) are the same spec" in err


def test_status_of_a_sweep_shows_each_run_its_values_and_each_stage(spec, capsys):
    sweep = expand(spec, None, [], [f"{LR}=1e-3,2e-3"])
    link(sweep)
    write_manifest(sweep)
    first = sweep.members[0].plan.stage("pretrain")
    folder = Path(first.run_dir)
    (folder / "spec.json").write_text(json.dumps({"stage": {"steps": 60}}))
    (folder / "metrics.jsonl").write_text(json.dumps({"step": 60, "loss": 0.5}) + "\n")
    (folder / "DONE").write_text("{}")
    assert main(["status", "runs/toy-sweep"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"sweep of spec.yaml: 2 runs over {LR}")
    assert lines[1] == f"toy-lr1e-3  {LR}=1e-3  runs/toy-lr1e-3"
    assert lines[2].startswith("    [pretrain] local done step 60/60 loss 0.5000")
    assert lines[3].startswith("    [finetune] not started")
    assert lines[4] == f"toy-lr2e-3  {LR}=2e-3  runs/toy-lr2e-3"
    assert lines[5].startswith("    [pretrain] local done step 60/60") and lines[5].endswith(
        "(shared: trained in toy-lr1e-3)")
    assert len(lines) == 7
    # from the spec, naming the sweep
    assert main(["status", spec, "--sweep", f"{LR}=1e-3,2e-3"]) == 0 and capsys.readouterr().out.splitlines() == lines
    err = errors(capsys, "status", spec, "--sweep", f"{LR}=5e-3")
    assert f"the last sweep of this spec was `--sweep {LR}=1e-3,2e-3`" in err
    assert sweep_status(Path("runs/toy-sweep"), stream=open(os.devnull, "w")) == 0


def _task(tmp_path, member: str, stage: str, upstream: str | None):
    from types import SimpleNamespace

    from flowspec.runtime.executors.sweep_slurm import Task

    stages = [SimpleNamespace(name=s, run_dir=str(tmp_path / member / s)) for s in ("pre", "ft", "polish")]
    plan = SimpleNamespace(stages=stages)
    me = SimpleNamespace(name=stage, upstream={"from": upstream} if upstream else {})
    return Task(None, plan, me, str(tmp_path / member / stage))


def test_arrays_wait_on_the_corresponding_task_or_on_the_tasks_they_read(tmp_path):
    from flowspec.runtime.executors.sweep_slurm import dependency

    real = lambda member, stage: os.path.realpath(tmp_path / member / stage)
    # a shared first stage (one job) feeds both tasks; their own second stages feed the third one to one
    jobs = {real("a", "pre"): "7", real("a", "ft"): "8_0", real("b", "ft"): "8_1"}
    ft = [_task(tmp_path, m, "ft", "pre") for m in ("a", "b")]
    assert dependency(ft, jobs) == "afterok:7"
    polish = [_task(tmp_path, m, "polish", "ft") for m in ("a", "b")]
    assert dependency(polish, jobs) == "aftercorr:8"
    # two tasks reading one upstream task each, not in order: afterok on the tasks read
    swapped = {**jobs, real("a", "ft"): "8_1", real("b", "ft"): "8_0"}
    assert dependency(polish, swapped) == "afterok:8_0:8_1"
    assert dependency(polish[:1], jobs) == "afterok:8_0"
    # an upstream stage finished before (no job): nothing to wait for
    assert dependency(ft, {}) is None


def test_an_arrays_pending_tasks_on_one_queue_line_each_get_its_state(monkeypatch, tmp_path):
    from flowspec.runtime.executors.follow import job_states
    from flowspec.runtime.executors.slurm import Submitted

    from .runtime.test_follow import answers, slurm_path

    slurm_path(monkeypatch, tmp_path, squeue=answers("12_[1-2%4]|PENDING\n12_0|RUNNING\n"),
               sacct=answers("13_0|14|COMPLETED\n"))
    jobs = [Submitted("ft", job, "", "") for job in ("12_0", "12_1", "12_2", "13_0")]
    assert job_states(jobs) == {"12_0": "RUNNING", "12_1": "PENDING", "12_2": "PENDING", "13_0": "COMPLETED"}


def test_tasks_of_an_array_cancelled_before_it_split_get_the_arrays_record(monkeypatch, tmp_path):
    from flowspec.runtime.executors.follow import job_states
    from flowspec.runtime.executors.slurm import Submitted

    from .runtime.test_follow import answers, slurm_path

    # accounting as a real cluster answers after `flowspec cancel`: array 13 never split (one record, JobID 13);
    # array 3 as its pending line; array 14 split, its task 1 having the array's raw id; array 16 knows task 1 only
    slurm_path(monkeypatch, tmp_path, squeue=answers(""), sacct=answers(
        "13|13|CANCELLED by 0\n3_[0-1%2]|3|CANCELLED by 0\n14_0|15|CANCELLED by 0\n14_1|14|COMPLETED\n"
        "16_1|16|COMPLETED\n"))
    ids = ("13_0", "13_1", "3_0", "3_1", "14_0", "14_1", "16_0", "16_1")
    assert job_states([Submitted("ft", job, "", "") for job in ids]) == {
        "13_0": "CANCELLED", "13_1": "CANCELLED", "3_0": "CANCELLED", "3_1": "CANCELLED", "14_0": "CANCELLED",
        "14_1": "COMPLETED", "16_0": "UNKNOWN", "16_1": "COMPLETED"}


def test_validate_checks_every_member_of_a_sweep(spec, capsys):
    assert main(["validate", spec, "--sweep", f"{LR}=1e-3,2e-3", "--sweep", "stages.pretrain.steps=40,60"]) == 0
    assert capsys.readouterr().out == "ok   spec.yaml (4 sweep runs, 2 stages: pretrain, finetune)\n"
    # a value only one member has is caught, named with that member, as `run --sweep` would refuse it
    assert main(["validate", spec, "--format", "json", "--sweep", f"{LR}=1e-3,-1"]) == 2
    result = json.loads(capsys.readouterr().out)["results"][0]
    assert not result["ok"] and result["runs"] == [] and len(result["issues"]) == 1
    issue = result["issues"][0]
    assert issue["file"] == f"--sweep {LR}=1e-3,-1" and issue["key"] == LR and "toy-lr-1" in issue["message"]
    err = errors(capsys, "validate", spec, "--sweep", f"{LR}=1e-3,0.001")
    assert "are the same spec after validation" in err and err.rstrip().endswith("FAIL spec.yaml")


def test_cancel_on_a_sweep_that_ran_here_says_there_is_nothing_to_cancel(spec, capsys):
    sweep = expand(spec, None, [], [f"{LR}=1e-3,2e-3"])
    write_manifest(sweep)
    assert main(["cancel", "runs/toy-sweep"]) == 2
    assert capsys.readouterr().err == "runs/toy-sweep: no SLURM submission found (its runs ran here, one after the other)\n"
