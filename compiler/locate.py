"""Map a key path (pydantic `loc` or a check's path) to where it was written and how the user names it."""
from __future__ import annotations

import re
from typing import Any, Sequence

from ..schemas.base import NAME_PATTERN
from .errors import Location
from .yamlpos import PosDict, PosList


def _all_kinds() -> frozenset[str]:
    from ..schemas.base import Block, kind_tag

    found, todo = set(), [Block]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if "kind" in getattr(cls, "model_fields", {}):
            found.add(kind_tag(cls))
    return frozenset(found)


_KINDS: frozenset[str] | None = None


def is_tag(node: PosDict, segment) -> bool:
    """pydantic puts a union's tag in the loc; it is not a key (the kind may be implied by a default)."""
    global _KINDS
    if _KINDS is None:
        _KINDS = _all_kinds()
    return node.get("kind", segment) == segment and segment in _KINDS


def locate(tree: PosDict, loc: Sequence[Any], fallback: Location, *, at_key: bool = True) -> Location:
    """Position of the deepest node of `loc` that exists in the tree (tag segments are skipped)."""
    node: Any = tree
    where = tree.loc or fallback
    for segment in loc:
        if isinstance(node, PosDict):
            if segment in node:
                where = (node.key_pos if at_key else node.val_pos).get(segment, where)
                node = node[segment]
            elif is_tag(node, segment):
                continue
            else:
                break
        elif isinstance(node, PosList) and isinstance(segment, int) and 0 <= segment < len(node):
            where = node.item_pos[segment] or where
            node = node[segment]
        else:
            break
    return where


def dotted(tree: PosDict, loc: Sequence[Any]) -> str:
    """The --set style path of `loc`: stage indices become stage names, union tags are dropped."""
    parts: list[str] = []
    node: Any = tree
    for segment in loc:
        if isinstance(node, PosDict):
            if segment in node:
                parts.append(str(segment))
                node = node[segment]
            elif is_tag(node, segment):
                continue
            else:
                parts.append(str(segment))
                node = None
        elif isinstance(node, PosList) and isinstance(segment, int) and 0 <= segment < len(node):
            item = node[segment]
            name = item.get("name") if isinstance(item, dict) else None
            names = [other.get("name") for other in node if isinstance(other, dict)]
            # Only a valid name stands for its item (a 5000-character or malformed one is shown by index).
            unique = isinstance(name, str) and re.fullmatch(NAME_PATTERN, name) and names.count(name) == 1
            parts.append(name if unique else str(segment))
            node = item
        else:
            parts.append(str(segment))
            node = None
    return ".".join(parts)
