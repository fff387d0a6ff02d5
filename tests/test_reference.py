"""docs/spec-reference.md, written from the schema, and `flowspec explain KEY`."""
import json
import re

import pytest

from flowspec.compiler.reference import UnknownKey, explain, markdown
from flowspec.schemas.export import json_schema
from flowspec.schemas.stages.preference import FlowGRPO

from .conftest import run_cli


def test_the_reference_in_docs_is_the_one_the_schema_writes(root):
    written = (root / "docs" / "spec-reference.md").read_text()
    assert written == markdown(json_schema()), "stale: run `flowspec reference --out docs/spec-reference.md`"


def test_every_key_of_every_block_has_a_row_with_its_type_default_and_description():
    schema = json_schema()
    text = markdown(schema)
    sections = dict(re.findall(r"^### (\w+)\n(.*?)(?=^### |\Z)", text, flags=re.S | re.M))
    for name, block in schema["$defs"].items():
        if name.endswith("Partial"):
            continue
        for key, field in block.get("properties", {}).items():
            row = next(line for line in sections[name].splitlines() if line.startswith(f"| `{key}` |"))
            if key in block.get("required", ()):
                assert "| required |" in row, (name, key)
            elif "default" in field:
                assert f"`{json.dumps(field['default'])}`" in row, (name, key)
            assert field.get("description", "").split(" ")[0] in row, (name, key)


def test_each_built_in_stage_kind_opens_with_its_algorithm_and_source():
    schema = json_schema()
    stages = [ref["$ref"].rsplit("/", 1)[-1] for ref in schema["properties"]["stages"]["items"]["anyOf"]]
    for name in stages:
        about = schema["$defs"][name].get("description", "")
        assert about, name
        if name != "Custom":  # a paper and its year
            assert re.search(r"et al\. \d{4}|& \w+ \d{4}", about), name


def test_explain_prints_one_keys_type_default_and_description_from_the_schema():
    field = FlowGRPO.model_fields["kl_form"]
    code, out, err = run_cli("explain", "stages.flow_grpo.kl_form")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "stages.flow_grpo.kl_form  (kind: flow_grpo)"
    assert lines[1] == "  type: " + " | ".join(json.dumps(v) for v in ("per_dim", "exact"))
    assert lines[2] == f"  default: {json.dumps(field.default)}"
    assert lines[3] == f"  {field.description}"


def test_explain_finds_a_key_of_one_member_of_a_union_and_names_it():
    text = explain(json_schema(), "model.latent.path")
    assert text.splitlines()[0] == "model.latent.path  (kind: vae)"
    kind = explain(json_schema(), "stages.reflow")
    assert "InstaFlow" in kind and "keys: " in kind and "one_step" in kind


@pytest.mark.parametrize("key,said", [("stages.flow_grpo.kl_frm", "did you mean 'kl_form'?"),
                                      ("trian.ema", "did you mean 'train'?"),
                                      ("model.latent.nothing", "model.latent.nothing: no such key")])
def test_explain_on_an_unknown_key_names_it_and_the_nearest(key, said):
    with pytest.raises(UnknownKey) as caught:
        explain(json_schema(), key)
    assert said in str(caught.value)
    code, _, err = run_cli("explain", key)
    assert code == 2 and said in err and "Traceback" not in err


def test_reference_prints_the_same_text_without_out(root):
    code, out, _ = run_cli("reference")
    assert code == 0 and out == (root / "docs" / "spec-reference.md").read_text()
