"""The JSON Schema of the spec language, for editors (yaml-language-server) and other tools.

A stage's inherited blocks (data, timesteps, optimizer, train, executor) are written as partial
overrides of the root blocks, so in the editor schema they point at copies of the definitions with
nothing required.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from .base import KIND_REQUIRED
from .spec import Spec
from .stages import INHERITED_BLOCKS

SCHEMA_FILE = Path(__file__).with_name("flowspec.schema.json")
_PREFIX = "#/$defs/"


def json_schema() -> dict[str, Any]:
    schema = Spec.model_json_schema(by_alias=True, mode="validation")
    defs = schema["$defs"]
    stage_defs = {ref["$ref"].removeprefix(_PREFIX) for ref in _stage_union(schema)}
    for name in sorted(stage_defs):
        stage = defs[name]
        stage["required"] = [r for r in stage.get("required", []) if r not in INHERITED_BLOCKS]
        for block in INHERITED_BLOCKS:
            stage["properties"][block] = _partial(stage["properties"][block], defs)
    for name in KIND_REQUIRED & set(defs):
        defs[name]["required"] = sorted({"kind", *defs[name].get("required", [])})
    schema = _any_of(schema)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "flowspec spec"
    return schema


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


def _any_of(node: Any) -> Any:
    """oneOf -> anyOf: a block whose kind is implied by a default matches several members."""
    if isinstance(node, dict):
        return {("anyOf" if k == "oneOf" else k): _any_of(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_any_of(v) for v in node]
    return node


def _stage_union(schema: dict) -> list[dict]:
    items = schema["properties"]["stages"]["items"]
    return items.get("oneOf") or items.get("anyOf") or [items]


def _partial(node: Any, defs: dict) -> Any:
    """A copy of `node` whose referenced definitions require nothing (added to defs as '<Name>Partial')."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref":
                out[key] = _partial_ref(value, defs)
            elif key == "required" or key == "discriminator":
                continue
            else:
                out[key] = _partial(value, defs)
        return out
    if isinstance(node, list):
        return [_partial(item, defs) for item in node]
    return node


def _partial_ref(ref: str, defs: dict) -> str:
    name = ref.removeprefix(_PREFIX)
    partial_name = f"{name}Partial"
    if partial_name not in defs:
        defs[partial_name] = {}  # placeholder first: definitions may refer to themselves
        defs[partial_name] = _partial(copy.deepcopy(defs[name]), defs)
    return _PREFIX + partial_name
