"""The command line: exit codes, overrides that point at the command line, pass dumps, run refusal."""
import json

import pytest

from flowspec.compiler import PASS_NAMES

from .conftest import run_cli


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


@pytest.mark.parametrize("name", PASS_NAMES)
def test_dump_after_each_pass_prints_json(name):
    code, out, err = run_cli("plan", "specs/quickstart.yaml", "--dump-after", name)
    assert code == 0, err
    form = json.loads(out)
    assert isinstance(form, dict) and form


def test_dump_after_unknown_pass():
    code, _, err = run_cli("plan", "specs/quickstart.yaml", "--dump-after", "parse")
    assert code == 2 and "unknown pass 'parse'" in err


def test_run_refuses_kinds_without_a_runtime_before_running_anything(tmp_path, root):
    spec = tmp_path / "s.yaml"
    text = (root / "specs/sdxl_like.yaml").read_text()
    spec.write_text(text)
    code, out, err = run_cli("run", str(spec), "--profile", "smoke", cwd=tmp_path)
    assert code == 2 and "Traceback" not in err
    assert "stage kind 'diffusion_dpo' has no runtime" in err
    assert not (tmp_path / "runs").exists()


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
