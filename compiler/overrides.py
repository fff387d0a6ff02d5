"""Profiles, --set overrides and stage inheritance: edits of the positioned tree that keep provenance.

One rule everywhere: a mapping merges into a mapping key by key (unless their `kind`s differ, then it
replaces it); anything else replaces. Lists of named items (stages) are addressed by name or index.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import Issue, Location, SpecError, did_you_mean, one_of
from .yamlpos import PosDict, PosList, clone, load_text, positioned


@dataclass(frozen=True)
class Override:
    path: tuple[str, ...]
    value: Any
    loc: Location

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


def parse_set(arg: str) -> Override:
    """`a.b.c=value`, where value is YAML (`3`, `1e-4`, `[1, 2]`, `{kind: uniform}`)."""
    where = Location(f"--set {arg}")
    key, sep, text = arg.partition("=")
    if not sep or not key.strip():
        raise SpecError([Issue(where, "", "expected --set dotted.key=value")])
    try:
        value = load_text(text, f"--set {arg}") if text.strip() else None
    except SpecError as exc:
        raise SpecError([Issue(where, key, f"value is not valid YAML ({exc.issues[0].message})")]) from None
    return Override(tuple(key.strip().split(".")), positioned(value, where), where)


def profile_overrides(tree: PosDict, name: str, spec_loc: Location) -> list[Override]:
    profiles = tree.get("profiles") or {}
    if name not in profiles:
        raise SpecError([Issue(spec_loc, "profiles", f"no profile named '{name}'{did_you_mean(name, profiles)}"
                               f" (profiles: {one_of(profiles) or 'none'})")])
    body = profiles[name]
    if not isinstance(body, PosDict):
        raise SpecError([Issue(profiles.key_pos.get(name, spec_loc), f"profiles.{name}",
                               "a profile is a mapping of dotted.key: value")])
    return [Override(tuple(str(key).split(".")), value, body.key_pos.get(key, body.loc or spec_loc))
            for key, value in body.items()]


def apply(tree: PosDict, override: Override) -> None:
    """Set (or merge into) the node at the override's path, creating missing mappings."""
    node: Any = tree
    for depth, segment in enumerate(override.path):
        last = depth == len(override.path) - 1
        where = ".".join(override.path[: depth + 1])
        if isinstance(node, PosList):
            index = _list_index(node, segment, override, where)
            if last:
                node[index] = merge(node[index], override.value)
                node.item_pos[index] = override.loc
                return
            node = node[index]
        elif isinstance(node, PosDict):
            if last:
                node.put(segment, merge(node.get(segment), override.value), override.loc)
                return
            if not isinstance(node.get(segment), (PosDict, PosList)):
                node.put(segment, PosDict(loc=override.loc), override.loc)
            node = node[segment]
        else:
            raise SpecError([Issue(override.loc, where, f"cannot set a key inside a {type(node).__name__} value")])


def _list_index(node: PosList, segment: str, override: Override, where: str) -> int:
    if segment.lstrip("-").isdigit():
        index = int(segment)
        if -len(node) <= index < len(node):
            return index % len(node)
        raise SpecError([Issue(override.loc, where, f"index {index} is out of range (the list has {len(node)} items)")])
    names = [item.get("name") for item in node if isinstance(item, dict)]
    if segment in names:
        return names.index(segment)
    raise SpecError([Issue(override.loc, where, f"no item named '{segment}'{did_you_mean(segment, names)}"
                           f" (names: {one_of(n for n in names if n)})")])


def merge(base: Any, over: Any) -> Any:
    """`over` merged into a copy of `base`: mappings key by key, everything else replaced."""
    if not isinstance(base, PosDict) or not isinstance(over, PosDict):
        return clone(over)
    if "kind" in over and base.get("kind") != over["kind"]:
        return clone(over)
    out = clone(base)
    for key, value in over.items():
        out.put(key, merge(out.get(key), value), over.key_pos.get(key), over.val_pos.get(key))
    return out


def inherit(tree: PosDict, blocks: tuple[str, ...]) -> None:
    """Fill each stage's blocks with the root block deep-merged with the stage's own.

    Schema defaults are not copied in: a block or union left out is completed by validation.
    """
    stages = tree.get("stages")
    if not isinstance(stages, PosList):
        return
    for index, stage in enumerate(stages):
        if not isinstance(stage, PosDict):
            continue
        for block in blocks:
            root = tree.get(block)
            root_copy = clone(root) if isinstance(root, PosDict) else PosDict(loc=tree.loc)
            own = stage.get(block)
            merged = merge(root_copy, own) if isinstance(own, PosDict) else root_copy
            if own is not None and not isinstance(own, PosDict):
                merged = own  # a wrong type: let validation report it where it was written
            if block in stage:
                stage.put(block, merged, stage.key_pos[block], stage.val_pos[block])
            else:
                fallback = stages.item_pos[index]
                stage.put(block, merged, tree.key_pos.get(block, fallback), tree.val_pos.get(block, fallback))
