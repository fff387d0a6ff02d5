"""Every shipped spec validates and compiles, with every profile, through the API and the CLI."""
import json

import jsonschema
import pytest

from flowspec.compiler import compile_spec
from flowspec.compiler.yamlpos import load_file
from flowspec.schemas.export import SCHEMA_FILE

from .conftest import SPECS, run_cli

SCHEMA_COMMENT = "# yaml-language-server: $schema=../schemas/flowspec.schema.json"
SPEC_PROFILES = [(spec, profile) for spec in SPECS for profile in [None, *load_file(str(spec)).get("profiles", {})]]


def test_the_shipped_specs_are_there():
    assert {p.stem for p in SPECS} >= {"quickstart", "quickstart_preference", "lifecycle", "sdxl_like", "sd3_like", "toy2d"}


@pytest.mark.parametrize("name,last", [("quickstart_preference", "grpo"), ("lifecycle", "lcm")])
def test_the_quick_start_extensions_share_the_quick_starts_stages(name, last):
    """Their pretrain and finetune are quickstart.yaml's (a run into the same folder reuses them)."""
    ours, theirs = (compile_spec(str(SPECS[0].parent / f"{spec}.yaml")) for spec in (name, "quickstart"))
    hashes = {s.name: s.hash for s in theirs.stages}
    assert [s.name for s in ours.stages] == ["pretrain", "finetune", last]
    assert all(s.hash == hashes[s.name] for s in ours.stages[:2]) and ours.spec.name == theirs.spec.name


@pytest.mark.parametrize("spec,profile", SPEC_PROFILES, ids=lambda x: getattr(x, "stem", x or "base"))
def test_spec_compiles(spec, profile):
    plan = compile_spec(str(spec), profile)
    assert plan.stages and all(len(s.hash) == 64 for s in plan.stages)
    assert [s.name for s in plan.stages] == [s.name for s in plan.spec.stages]


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_spec_names_its_json_schema(spec):
    assert spec.read_text().splitlines()[0] == SCHEMA_COMMENT
    assert (spec.parent / "../schemas/flowspec.schema.json").resolve() == SCHEMA_FILE.resolve()


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_editor_schema_accepts_the_spec_as_written(spec):
    """What yaml-language-server sees: the file as written (stage blocks partial, kinds implied)."""
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.validate(json.loads(json.dumps(load_file(str(spec)))), schema)


def test_editor_schema_rejects_an_unknown_key():
    schema = json.loads(SCHEMA_FILE.read_text())
    document = json.loads(json.dumps(load_file(str(SPECS[0]))))
    document["stages"][0]["stepz"] = 3
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, schema)


def test_cli_validate_all_specs_exits_zero(root):
    code, out, err = run_cli("validate", *[str(p.relative_to(root)) for p in SPECS])
    assert code == 0, err
    assert out.count("ok   ") == len(SPEC_PROFILES)


def test_plan_json_has_stage_names_kinds_hashes_and_estimates(root):
    code, out, err = run_cli("plan", "specs/quickstart.yaml", "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert [(s["name"], s["kind"]) for s in plan["stages"]] == [
        ("pretrain", "pretrain"), ("finetune", "finetune"), ("subject", "dreambooth")]
    assert all(len(s["hash"]) == 64 for s in plan["stages"])
    estimate = plan["stages"][0]["estimate"]
    assert estimate["params_total"] > 0 and estimate["train_flops"] > 0 and estimate["gpu_hours"] > 0


EXAMPLES = sorted((SPECS[0].parent.parent / "examples").rglob("*.yaml"))


@pytest.mark.parametrize("spec", EXAMPLES, ids=lambda p: p.parent.name)
def test_example_specs_compile(spec):
    assert spec.read_text().startswith("# yaml-language-server: $schema=")
    assert compile_spec(str(spec)).stages
