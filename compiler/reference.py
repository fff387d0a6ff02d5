"""The spec language's reference, written from its JSON Schema: docs/spec-reference.md and `flowspec explain`.

Every key's type, default and description come from the schema (schemas/*.py field descriptions); a stage kind's
section opens with its class docstring: the algorithm it trains and where it comes from. No torch is imported.
"""
from __future__ import annotations

import difflib
import json
import textwrap

HEADER = ("# Spec reference\n\nGenerated from the spec language's schema by `flowspec reference --out "
          "docs/spec-reference.md`; do not edit by hand (a test fails when it is stale). `flowspec explain KEY` "
          "prints one key, e.g. `flowspec explain stages.flow_grpo.kl_form`.\n")


def defs_of(schema: dict) -> dict[str, dict]:
    return schema.get("$defs", {})


def ref_name(node: dict) -> str | None:
    ref = node.get("$ref")
    return ref.rsplit("/", 1)[-1] if ref else None


def whole_name(name: str) -> str:
    """A stage's partial override block (TrainPartial) is documented with the whole one (Train)."""
    return name[: -len("Partial")] if name.endswith("Partial") else name


def type_text(node: dict, link: bool = True) -> str:
    name = ref_name(node)
    if name:
        name = whole_name(name)
        return f"[{name}](#{name.lower()})" if link else name
    if "const" in node:
        return json.dumps(node["const"])
    if "enum" in node:
        return " \\| ".join(json.dumps(v) for v in node["enum"])
    if "anyOf" in node or "oneOf" in node:
        return " \\| ".join(type_text(n, link) for n in node.get("anyOf", node.get("oneOf")))
    kind = node.get("type", "any")
    if kind == "array":
        return f"list of {type_text(node.get('items', {}), link)}"
    if kind == "object" and isinstance(node.get("additionalProperties"), dict):
        return f"map of {type_text(node['additionalProperties'], link)}"
    bounds = [f"{op} {node[key]}" for key, op in (("exclusiveMinimum", ">"), ("minimum", ">="),
                                                   ("exclusiveMaximum", "<"), ("maximum", "<=")) if key in node]
    return kind + (f" ({', '.join(bounds)})" if bounds else "")


def default_text(node: dict, required: bool) -> str:
    if required:
        return "required"
    return f"`{json.dumps(node['default'])}`" if "default" in node else ""


def table(node: dict) -> list[str]:
    rows = ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    required = set(node.get("required", ()))
    for key, field in node.get("properties", {}).items():
        text = field.get("description", "").replace("|", "\\|").replace("\n", " ")
        rows.append(f"| `{key}` | {type_text(field)} | {default_text(field, key in required)} | {text} |")
    return rows


def kinds_of(schema: dict, union: dict) -> list[tuple[str, str]]:
    """(kind, def name) of a tagged union's members."""
    found = []
    for member in union.get("anyOf", union.get("oneOf", [])):
        name = ref_name(member)
        kind = defs_of(schema).get(name, {}).get("properties", {}).get("kind", {}).get("const") if name else None
        if kind is not None:
            found.append((kind, name))
    return found


def markdown(schema: dict) -> str:
    """The whole reference: the top level, the stage kinds, then every block, each as a table."""
    defs = defs_of(schema)
    stages = [name for _, name in kinds_of(schema, schema["properties"]["stages"]["items"])]
    lines = [HEADER, "## Top level", "", *table(schema), ""]
    lines += ["## Stage kinds", ""]
    for name in stages:
        kind = defs[name]["properties"]["kind"]["const"]
        lines += [f"### {name}", "", f"`kind: {kind}`. {defs[name].get('description', '')}".rstrip(), "",
                  *table(defs[name]), ""]
    lines += ["## Blocks", ""]
    for name in sorted(n for n in defs if n not in stages and not n.endswith("Partial")):
        about = defs[name].get("description", "")
        lines += [f"### {name}", "", *([about, ""] if about else []), *table(defs[name]), ""]
    return "\n".join(lines).rstrip() + "\n"


# ------------------------------------------------------------------------------------------ explain
class UnknownKey(ValueError):
    pass


def resolve(schema: dict, node: dict) -> dict:
    name = ref_name(node)
    return defs_of(schema)[whole_name(name)] if name else node


def members(schema: dict, node: dict) -> list[tuple[str | None, dict]]:
    """The blocks a key may hold: its tagged union's members with their kind, or the one block."""
    node = resolve(schema, node)
    if node.get("type") == "array":
        return members(schema, node.get("items", {}))
    options = [n for n in node.get("anyOf", []) if n.get("type") != "null"]
    if len(options) == 1:
        return members(schema, options[0])
    kinds = kinds_of(schema, node)
    if kinds:
        return [(kind, defs_of(schema)[whole_name(name)]) for kind, name in kinds]
    return [(None, node)] if "properties" in node else []


def explain(schema: dict, key: str) -> str:
    """One key's documentation. A segment after a union of kinds may name a kind (stages.flow_grpo.kl_form) or a
    key of its members (model.latent.path)."""
    node, where, trail = {"properties": schema["properties"], "required": schema.get("required", [])}, [], []
    for segment in key.split("."):
        blocks = [(None, node)] if not trail else members(schema, node)
        kinds = {kind: block for kind, block in blocks if kind is not None}
        if segment in kinds:
            node, where, trail = kinds[segment], where + [f"kind: {segment}"], trail + [segment]
            continue
        holding = [(kind, block) for kind, block in blocks if segment in block.get("properties", {})]
        if not holding:
            known = sorted({*kinds, *(k for _, b in blocks for k in b.get("properties", {}))})
            close = difflib.get_close_matches(segment, known, n=1)
            raise UnknownKey(f"{'.'.join(trail + [segment])}: no such key" + (f" (did you mean '{close[0]}'?)" if close
                             else f"; keys here: {', '.join(known)}" if known else ""))
        if len(holding) < len(blocks) and all(k is not None for k, _ in holding):
            where = where + [f"kind: {' | '.join(k for k, _ in holding)}"]
        node, trail = holding[0][1]["properties"][segment], trail + [segment]
    return describe(schema, key, node, where)


def describe(schema: dict, key: str, node: dict, where: list[str]) -> str:
    lines = [key + (f"  ({'; '.join(where)})" if where else "")]
    if "properties" in node:  # a block (a stage kind: its docstring, the algorithm)
        lines += [textwrap.indent(node["description"], "  ")] if node.get("description") else []
    else:
        lines += [f"  type: {type_text(node, link=False).replace(chr(92) + '|', '|')}"]
        if "default" in node:
            lines += [f"  default: {json.dumps(node['default'])}"]
        if node.get("description"):
            lines += [textwrap.indent(node["description"], "  ")]
    inner = members(schema, node)
    keys = sorted({k for _, block in inner for k in block.get("properties", {})})
    if keys:
        lines += [f"  keys: {', '.join(keys)}"]
    kinds = [kind for kind, _ in inner if kind is not None]
    if len(kinds) > 1:
        lines += [f"  kinds: {', '.join(kinds)}"]
    return "\n".join(lines)
