"""Profiles, --set overrides and stage inheritance: edits of the positioned tree that keep provenance.

One rule everywhere: a mapping merges into a mapping key by key (unless their `kind`s differ, then it
replaces it); anything else replaces. Lists of named items (stages) are addressed by name or index.
"""
from __future__ import annotations

import typing
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


def parse_set(arg: str, flag: str = "--set") -> Override:
    """`a.b.c=value`, where value is YAML (`3`, `1e-4`, `[1, 2]`, `{kind: uniform}`); errors point at
    `flag arg` (a sweep's values are applied like --set, but located at the --sweep that gave them)."""
    where = Location(f"{flag} {arg}")
    key, sep, text = arg.partition("=")
    if not sep or not key.strip():
        raise SpecError([Issue(where, "", f"expected {flag} dotted.key=value")])
    try:
        value = load_text(text, f"{flag} {arg}") if text.strip() else None
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
                merged = merge(node.get(segment), override.value)
                # A mapping merged key by key stays where it was written; its replaced keys move to the override.
                kept = segment in node and _merges(node.get(segment), override.value)
                node.put(segment, merged, node.key_pos.get(segment) if kept else override.loc,
                         node.val_pos.get(segment) if kept else None)
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


def merge(base: Any, over: Any, keep_positions: bool = True) -> Any:
    """`over` merged into a copy of `base`: mappings key by key, everything else replaced. With
    `keep_positions`, a mapping merged key by key keeps the position of `base`'s key (an override of one
    key inside a block does not move the block); otherwise every key of `over` takes its position."""
    if not isinstance(base, PosDict) or not isinstance(over, PosDict):
        return clone(over)
    if "kind" in over and base.get("kind") != over["kind"]:
        return clone(over)
    out = clone(base)
    for key, value in over.items():
        merged = merge(out.get(key), value, keep_positions)
        if keep_positions and key in out and _merges(out.get(key), value):
            out.put(key, merged, out.key_pos.get(key), out.val_pos.get(key))
        else:
            out.put(key, merged, over.key_pos.get(key), over.val_pos.get(key))
    return out


def _merges(base: Any, over: Any) -> bool:
    """Whether `over` merges into `base` key by key (rather than replacing it)."""
    return isinstance(base, PosDict) and isinstance(over, PosDict) and not (
        "kind" in over and base.get("kind") != over["kind"])


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
            # The stage's own keys point where the stage wrote them, the rest at the root block.
            merged = merge(root_copy, own, keep_positions=False) if isinstance(own, PosDict) else root_copy
            if own is not None and not isinstance(own, PosDict):
                merged = own  # a wrong type: let validation report it where it was written
            if block in stage:
                stage.put(block, merged, stage.key_pos[block], stage.val_pos[block])
            else:
                fallback = stages.item_pos[index]
                stage.put(block, merged, tree.key_pos.get(block, fallback), tree.val_pos.get(block, fallback))


def kinds_of(union: Any) -> tuple[dict[str, set[str]], str | None]:
    """For a union made by schemas.base.tagged: kind -> the keys a block of that kind accepts, and the
    kind of a block that names none."""
    members, discriminator = typing.get_args(union)
    keys = {}
    for member in typing.get_args(members):
        model = typing.get_args(member)[0]
        keys[typing.get_args(model.model_fields["kind"].annotation)[0]] = {
            field.alias or name for name, field in model.model_fields.items()}
    return keys, discriminator.discriminator({})


def switch_kind(tree: PosDict, block: str, kind: str, union: Any, where: Location) -> None:
    """Make the root block `block` and each stage's own one of kind `kind` (the command line's choice, e.g.
    `--executor slurm`), before any --set: the keys the new kind shares with the old (gpu, mfu) stay where
    they were written, the others (local's devices) go, since they describe a kind that will not run.
    A stage block that names no kind merges into the root's and stays kindless; one that names a kind gets
    the new one."""
    keys, default = kinds_of(union)
    if kind not in keys:
        raise SpecError([Issue(where, block, f"unknown {block} kind '{kind}'{did_you_mean(kind, keys)}"
                               f" (kinds: {one_of(keys)})")])
    root = tree.get(block)
    if root is not None and not isinstance(root, PosDict):
        return  # a wrong type: validation reports it where it was written
    old = root.get("kind", default) if root is not None else default
    if old != kind:
        converted = _as_kind(root if root is not None else PosDict(loc=where), kind, keys, where, named=True)
        tree.put(block, converted, tree.key_pos.get(block, where), tree.val_pos.get(block, where))
    for stage in tree.get("stages") or ():
        own = stage.get(block) if isinstance(stage, PosDict) else None
        if isinstance(own, PosDict) and own.get("kind", old) != kind:
            converted = _as_kind(own, kind, keys, where, named="kind" in own)
            stage.put(block, converted, stage.key_pos.get(block), stage.val_pos.get(block))


def _as_kind(node: PosDict, kind: str, keys: dict[str, set[str]], where: Location, named: bool) -> PosDict:
    out = PosDict(loc=node.loc)
    if named:
        out.put("kind", kind, node.key_pos.get("kind", where), where)
    for key, value in node.items():
        if key in keys[kind] - {"kind"}:
            out.put(key, value, node.key_pos.get(key), node.val_pos.get(key))
    return out
