"""Pass `validate`: the positioned tree through pydantic, every error mapped to file:line:col."""
from __future__ import annotations

import os
import re
import types
import typing
from typing import Any, Sequence

from pydantic import BaseModel, ValidationError

from ..schemas import Spec
from .errors import Issue, Location, SpecError, did_you_mean, one_of
from .locate import dotted, is_tag, locate
from .yamlpos import PosDict


def validate(tree: PosDict, fallback: Location) -> Spec:
    # Custom stage kinds import their objective class beside the spec file (schemas/stages/custom.py).
    context = {"spec_dir": os.path.dirname(os.path.abspath(fallback.file))}
    try:
        return Spec.model_validate(tree, context=context)
    except ValidationError as exc:
        issues = _dedupe([_issue(error, tree, fallback) for error in _one_per_value(tree, exc.errors())])
        raise SpecError(sorted(issues, key=position)) from None


def position(issue: Issue) -> tuple:
    """Errors print in file order; command-line overrides (no line) after the file."""
    loc = issue.loc
    return (loc.line is None, loc.file if loc.line is not None else "", loc.line or 0, loc.col or 0)


def _dedupe(issues: list[Issue]) -> list[Issue]:
    """A root block's error shows up again in each stage that inherits it: keep the first only."""
    seen: set[tuple] = set()
    kept = []
    for issue in issues:
        tail = issue.path.split(".", 2)[-1] if issue.path.startswith("stages.") else issue.path
        key = (issue.loc, tail.split(".")[-1], issue.message)
        if key not in seen:
            seen.add(key)
            kept.append(issue)
    return kept


# pydantic names the member of a plain union (`str | float`, `list[str] | Literal[...]`) in an error's loc:
# a type label, not a key the user wrote.
_MEMBER_LABEL = re.compile(r"^(str|int|float|bool|none|constrained-\w+|[a-z-]+\[.*\])$")
_TYPE_ERRORS = ("_type", "_parsing", "literal_error", "is_instance_of")


def _without_labels(tree: PosDict, loc: tuple) -> tuple:
    """`loc` without the union member labels pydantic inserts: a segment that looks like one and is not a key
    the user wrote at that point (a key named `none` is a key)."""
    node: Any = tree
    kept = []
    for segment in loc:
        written = isinstance(node, dict) and segment in node
        if isinstance(node, PosDict) and not written and is_tag(node, segment):
            kept.append(segment)  # a tagged union's tag: the node itself, one level on
            continue
        if not written and isinstance(segment, str) and _MEMBER_LABEL.match(segment):
            continue
        kept.append(segment)
        is_item = isinstance(node, list) and isinstance(segment, int) and 0 <= segment < len(node)
        node = node[segment] if written or is_item else None
    return tuple(kept)


def _one_per_value(tree: PosDict, errors: list[dict]) -> list[dict]:
    """Union member labels dropped from each loc. A value that fails every member of a union gets one
    error per member; the one that says what is wrong with it (here or inside it) is kept, not those
    saying it is not of another member's type."""
    errors = [{**e, "loc": _without_labels(tree, e["loc"])} for e in errors]
    kept, seen_type = [], set()
    for i, error in enumerate(errors):
        if error["type"].endswith(_TYPE_ERRORS):
            loc = error["loc"]
            deeper = [e for j, e in enumerate(errors) if j != i and e["loc"][:len(loc)] == loc
                      and (len(e["loc"]) > len(loc) or not e["type"].endswith(_TYPE_ERRORS))]
            if deeper or loc in seen_type:
                continue
            seen_type.add(loc)
        kept.append(error)
    return kept


def _issue(error: dict, tree: PosDict, fallback: Location) -> Issue:
    loc, kind, ctx = tuple(error["loc"]), error["type"], error.get("ctx") or {}
    path = dotted(tree, loc)
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        hint = did_you_mean(loc[-1], allowed)
        return Issue(locate(tree, loc, fallback), path, f"unknown key '{loc[-1]}'{hint}")
    if kind == "missing":
        return Issue(locate(tree, loc, fallback), dotted(tree, loc[:-1]), f"missing required key '{loc[-1]}'")
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tags = _kinds_at(loc)
        where = locate(tree, (*loc, "kind"), fallback, at_key=False)
        if kind == "union_tag_not_found":
            return Issue(where, path, f"missing 'kind' (one of: {one_of(tags)})")
        tag = ctx.get("tag")
        return Issue(where, f"{path}.kind", f"unknown kind '{tag}'{did_you_mean(tag, tags)} (valid kinds: {one_of(tags)})")
    if kind == "literal_error":
        choices = [a or b for a, b in re.findall(r"'([^']*)'|(-?\d+)", str(ctx.get("expected", "")))]
        value = error.get("input")
        return Issue(locate(tree, loc, fallback, at_key=False), path,
                     f"'{value}' is not one of {one_of(choices)}{did_you_mean(value, choices)}")
    message = error["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    return Issue(locate(tree, loc, fallback, at_key=False), path, message[0].lower() + message[1:])


def _allowed_keys(loc: Sequence[Any]) -> list[str]:
    """Keys the schema allows at `loc` (for did-you-mean), walking the pydantic models."""
    node: Any = Spec
    for segment in loc:
        node = _step(node, segment)
        if node is None:
            return []
    model = _as_model(node)
    if model is None:
        return []
    return [info.alias or name for name, info in model.model_fields.items()]


def _kinds_at(loc: Sequence[Any]) -> list[str]:
    node: Any = Spec
    for segment in loc:
        node = _step(node, segment)
        if node is None:
            return []
    models = [m for m in _members(node) if isinstance(m, type) and issubclass(m, BaseModel)]
    return [tag for m in models if "kind" in m.model_fields for tag in typing.get_args(m.model_fields["kind"].annotation)]


def _members(tp: Any) -> tuple:
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _members(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        return tuple(m for arg in typing.get_args(tp) for m in _members(arg))
    return (tp,)


def _as_model(tp: Any) -> type[BaseModel] | None:
    models = [m for m in _members(tp) if isinstance(m, type) and issubclass(m, BaseModel)]
    return models[0] if len(models) == 1 else None


def _step(tp: Any, segment: Any) -> Any:
    members = _members(tp)
    models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
    tagged = [m for m in models if "kind" in m.model_fields
              and segment in typing.get_args(m.model_fields["kind"].annotation)]
    if tagged:
        return tagged[0]
    if len(models) == 1:
        model = models[0]
        for name, info in model.model_fields.items():
            if segment in (name, info.alias):
                return info.annotation
        return None
    for member in members:
        origin = typing.get_origin(member)
        if origin in (list, tuple) and isinstance(segment, int):
            return typing.get_args(member)[0]
        if origin is dict:
            return typing.get_args(member)[1]
    return None
