"""The command line: exit codes, overrides that point at the command line, pass dumps, run refusal."""
import json

import pytest

from flowspec.compiler import PASS_NAMES

from .conftest import ROOT, run_cli


def test_set_override_error_points_at_the_command_line():
    code, _, err = run_cli("plan", "specs/quickstart.yaml", "--no-estimate", "--set", "stages.pretrain.steps=many")
    assert code == 2 and "Traceback" not in err
    assert "--set stages.pretrain.steps=many: stages.pretrain.steps: input should be a valid integer" in err


def test_set_unknown_key_gets_did_you_mean():
    code, _, err = run_cli("validate", "specs/quickstart.yaml", "--set", "model.config.layers_per_blok=2")
    assert code == 2
    assert ("--set model.config.layers_per_blok=2: model.config.layers_per_blok: unknown key 'layers_per_blok' "
            "(did you mean 'layers_per_block'?)") in err


def test_set_unknown_stage_name():
    code, _, err = run_cli("validate", "specs/quickstart.yaml", "--set", "stages.pretrian.steps=3")
    assert code == 2 and "no item named 'pretrian' (did you mean 'pretrain'?)" in err


def test_set_changes_the_plan():
    code, out, err = run_cli("plan", "specs/quickstart.yaml", "--no-estimate", "--json",
                             "--set", "stages.pretrain.steps=523", "--set", "optimizer={kind: sgd, lr: 0.1}")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["stages"][0]["steps"] == 523
    assert plan["spec"]["stages"][0]["optimizer"]["kind"] == "sgd"
    assert plan["spec"]["stages"][1]["optimizer"]["lr"] == 3e-4  # the stage's own key merges over the new root


def test_unknown_profile():
    code, _, err = run_cli("plan", "specs/quickstart.yaml", "--no-estimate", "--profile", "smok")
    assert code == 2 and "no profile named 'smok' (did you mean 'smoke'?)" in err


DUMP_ARGS = (str(ROOT / "specs/sdxl_like.yaml"), "--profile", "smoke", "--set", "stages.sft.steps=3", "--set", "train.cfg_dropout=0",
             "--stage", "sft")


def dump(name, cwd=ROOT):
    # Only `resolve` looks ops up in the runtime (torch); --no-estimate keeps the other dumps torch-free and fast.
    fast = ("--no-estimate",) if PASS_NAMES.index(name) < PASS_NAMES.index("resolve") else ()
    code, out, err = run_cli("plan", *DUMP_ARGS, *fast, "--dump-after", name, cwd=cwd)
    assert code == 0, err
    return json.loads(out)


# What each pass adds, seen in its dump and not in the dump of the pass before it.
PASS_EFFECTS = {
    "load": lambda f: f["stages"][2]["steps"] == 20000 and "profiles" in f and "output_dir" not in f,
    "migrate": lambda f: f["flowspec"] == 1 and f["stages"][2]["steps"] == 20000,
    "profile": lambda f: f["stages"][2]["steps"] == 4 and f["model"]["preset"] == "tiny",
    "overrides": lambda f: f["stages"][2]["steps"] == 3 and "data" not in f["stages"][1],
    "inherit": lambda f: f["stages"][1]["data"]["source"]["kind"] == "shapes",
    "validate": lambda f: f["spec"]["output_dir"] == "runs" and f["warnings"] == [],
    "check": lambda f: any("cfg_dropout" in w for w in f["warnings"]),
    "lower": lambda f: len(f["stages"]) == 6 and f["stages"][1]["ops"][0]["op"] == "load_model",
    "select": lambda f: [s["name"] for s in f["stages"]] == ["vae", "pretrain", "sft"] and not f["resolved"],
    "resolve": lambda f: f["resolved"] and all(op["missing"] is None for s in f["stages"] for op in s["ops"]),
    "cache": lambda f: [s["cache"] for s in f["stages"]] == ["hit", "hit", "miss"],
}


def test_dump_after_each_pass_shows_that_pass_at_work(tmp_path, root):
    assert tuple(PASS_EFFECTS) == PASS_NAMES
    for stage in dump("lower")["stages"][:2]:  # the `cache` pass finds the finished vae and pretrain stages
        finished = tmp_path / stage["run_dir"]
        finished.mkdir(parents=True)
        (finished / "DONE").write_text("{}")
    previous = None
    for name, effect in PASS_EFFECTS.items():
        form = dump(name, cwd=tmp_path)
        assert effect(form), name
        if previous is not None and name != "migrate":  # version 1 is current: migrate has nothing to do
            assert not holds(effect, previous), f"{name}: already true before the pass"
        previous = form


def holds(effect, form) -> bool:
    try:
        return bool(effect(form))
    except (KeyError, IndexError, TypeError):
        return False


def test_dump_after_unknown_pass():
    code, _, err = run_cli("plan", "specs/quickstart.yaml", "--dump-after", "parse")
    assert code == 2 and "unknown pass 'parse'" in err


@pytest.mark.slow  # the two headline chains, eight stages (about a minute and a half): with the slow tests
@pytest.mark.parametrize("name,stages", [
    # sdxl_like's chain runs in CI as SLURM jobs (tests/slurm/test_slurm.py), the same stages
    pytest.param("sdxl_like", ("vae", "pretrain", "sft", "dpo", "subject_lora", "lcm"), marks=pytest.mark.extended),
    ("sd3_like", ("vae", "pretrain", "grpo", "reflow"))])
def test_a_headline_smoke_chain_runs_every_stage_locally(tmp_path, root, name, stages, smoke_vae):
    smoke_vae(tmp_path, name)  # its first stage, trained by the same command once per session
    code, out, err = run_cli("run", str(root / f"specs/{name}.yaml"), "--profile", "smoke", cwd=tmp_path)
    assert code == 0 and "Traceback" not in err, err
    for stage in stages:
        assert len(list((tmp_path / f"runs/{name}").glob(f"{stage}-*/model"))) == 1, stage
    assert list((tmp_path / f"runs/{name}").glob(f"{stages[-1]}-*/distill_report.json"))


def test_validate_reports_a_broken_profile_and_fails(tmp_path, root):
    spec = tmp_path / "s.yaml"
    spec.write_text((root / "specs/toy2d.yaml").read_text() + "  broken:\n    stages.pretrain.steps: -1\n")
    code, out, err = run_cli("validate", str(spec))
    assert code == 2
    assert "ok   " in out and "FAIL" in err and "--profile broken" in err
    assert "stages.pretrain.steps: input should be greater than 0" in err


def test_validate_missing_file():
    code, _, err = run_cli("validate", "specs/nope.yaml")
    assert code == 2 and "specs/nope.yaml: cannot read spec" in err


def test_run_with_executor_slurm_takes_set_keys_of_slurm_and_then_needs_slurm(tmp_path, root, monkeypatch, capsys):
    """--executor applies before --set: a local spec's run on SLURM can set SLURM's keys. Without SLURM's
    commands (PATH holds none, whatever this machine has) the run then stops, saying so in one line."""
    from flowspec.cli import main

    (tmp_path / "s.yaml").write_text((root / "specs/toy2d.yaml").read_text() + "executor: {kind: local, devices: 2}\n")
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.chdir(tmp_path)
    code = main(["run", "s.yaml", "--executor", "slurm", "--set", "executor.gpus_per_node=4"])
    err = capsys.readouterr().err
    assert code == 2 and "unknown key" not in err
    assert err.startswith("--executor slurm: SLURM's `sbatch`, `srun`, `squeue`, `sacct`, `scontrol` are not in any "
                          "folder of $PATH: this machine is not a SLURM login node"), err
    assert "`flowspec run s.yaml --executor local`" in err and not (tmp_path / "runs").exists()
