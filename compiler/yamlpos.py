"""Load YAML keeping the position of every key and value (ruamel round-trip loader).

The tree is made of PosDict / PosList: plain dict and list subclasses that also remember where
each entry was written, so any later error, after merges and overrides, still points at a line.
"""
from __future__ import annotations

import copy
import io
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.reader import ReaderError

from .errors import Issue, Location, SpecError

_STANDARD_TAG = "tag:yaml.org,2002:"


class PosDict(dict):
    """A mapping that knows where it, each key and each value were written."""

    def __init__(self, *args, loc: Location | None = None, **kw):
        super().__init__(*args, **kw)
        self.loc = loc
        self.key_pos: dict[Any, Location] = {}
        self.val_pos: dict[Any, Location] = {}

    def put(self, key, value, key_loc: Location | None, val_loc: Location | None = None) -> None:
        self[key] = value
        if key_loc is not None:
            self.key_pos[key] = key_loc
            self.val_pos[key] = val_loc or key_loc


class PosList(list):
    """A sequence that knows where it and each item were written."""

    def __init__(self, *args, loc: Location | None = None):
        super().__init__(*args)
        self.loc = loc
        self.item_pos: list[Location | None] = [loc] * len(self)

    def add(self, value, item_loc: Location | None) -> None:
        self.append(value)
        self.item_pos.append(item_loc)


def clone(node: Any) -> Any:
    """A copy of a positioned tree: containers are new, scalars and Locations (immutable) shared."""
    if isinstance(node, PosDict):
        out = PosDict(loc=node.loc)
        for key, value in node.items():
            out[key] = clone(value)
        out.key_pos, out.val_pos = dict(node.key_pos), dict(node.val_pos)
        return out
    if isinstance(node, PosList):
        out = PosList([clone(item) for item in node], loc=node.loc)
        out.item_pos = list(node.item_pos)
        return out
    if isinstance(node, (dict, list)):
        return copy.deepcopy(node)
    return node


def load_file(path: str) -> PosDict:
    """Parse a spec file into a positioned tree; syntax, duplicate-key and tag errors raise SpecError.

    Returns a fresh copy each call: compiling one spec under several profiles parses it once.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise SpecError([Issue(Location(path), "", f"cannot read spec: {exc.strerror}")]) from None
    except UnicodeDecodeError as exc:
        line = exc.object[:exc.start].count(b"\n") + 1
        raise SpecError([Issue(Location(path, line, 1), "", f"not UTF-8 text (byte {exc.object[exc.start]:#04x} at "
                               f"offset {exc.start}): save the spec as UTF-8")]) from None
    key = (path, text)
    if key not in _PARSED:
        tree = load_text(text, path)
        if not isinstance(tree, PosDict):
            raise SpecError([Issue(Location(path, 1, 1), "", "a spec must be a mapping of keys to values")])
        _PARSED.clear()
        _PARSED[key] = tree
    return clone(_PARSED[key])


_PARSED: dict[tuple[str, str], PosDict] = {}


def load_text(text: str, file: str) -> Any:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        raw = yaml.load(io.StringIO(text))
    except MarkedYAMLError as exc:
        raise SpecError([_syntax_issue(exc, file)]) from None
    except ReaderError as exc:  # a character YAML does not allow (control characters, U+FFFE)
        line = text[:exc.position].count("\n") + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise SpecError([Issue(Location(file, line, column), "", f"YAML syntax: character U+{code:04X} is not allowed "
                               "in YAML (remove it, or write it as an escape in a double-quoted string)")]) from None
    except ValueError as exc:  # an integer literal longer than Python converts (4300 digits)
        raise SpecError([Issue(Location(file), "", f"YAML value: a number too long to read ({str(exc).split(';')[0]})")]) from None
    issues: list[Issue] = []
    tree = _convert(raw, file, Location(file, 1, 1), issues)
    if issues:
        raise SpecError(issues)
    return tree


def _syntax_issue(exc: MarkedYAMLError, file: str) -> Issue:
    mark = exc.problem_mark or exc.context_mark
    where = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file)
    message = exc.problem or exc.context or str(exc)
    if exc.problem and exc.context:
        context = exc.context
        if exc.context_mark is not None and exc.context_mark is not mark:
            context += f" that starts at line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1}"
        message += f" ({context})"
    return Issue(where, "", f"YAML syntax: {message}")


def _loc(file: str, lc) -> Location:
    return Location(file, lc[0] + 1, lc[1] + 1)


def _check_tag(node, file: str, where: Location, issues: list[Issue]) -> None:
    tag = getattr(getattr(node, "tag", None), "value", None)
    if tag and not tag.startswith(_STANDARD_TAG):
        issues.append(Issue(where, "", f"unknown YAML tag {tag!r} (flowspec specs use plain YAML, no tags)"))


def _convert(node: Any, file: str, where: Location, issues: list[Issue]) -> Any:
    _check_tag(node, file, where, issues)
    if isinstance(node, CommentedMap):
        out = PosDict(loc=where)
        for key, value in node.items():
            try:
                key_loc, val_loc = _loc(file, node.lc.key(key)), _loc(file, node.lc.value(key))
            except (KeyError, TypeError):  # keys that came in through a YAML merge (<<) have no own position
                key_loc = val_loc = where
            out.put(_plain(key), _convert(value, file, val_loc, issues), key_loc, val_loc)
        return out
    if isinstance(node, CommentedSeq):
        out = PosList(loc=where)
        for index, value in enumerate(node):
            try:
                item_loc = _loc(file, node.lc.item(index))
            except (KeyError, TypeError):
                item_loc = where
            out.add(_convert(value, file, item_loc, issues), item_loc)
        return out
    return _plain(node)


def _plain(value: Any) -> Any:
    """ruamel's scalar subclasses (ScalarFloat, HexInt, LiteralScalarString...) as plain Python values."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if hasattr(value, "value"):  # TaggedScalar
        return _plain(value.value)
    return value


def positioned(value: Any, loc: Location) -> Any:
    """Wrap a plain value (e.g. from --set) so every node of it points at `loc`."""
    if isinstance(value, dict):
        out = PosDict(loc=loc)
        for key, item in value.items():
            out.put(key, positioned(item, loc), loc)
        return out
    if isinstance(value, list):
        out = PosList(loc=loc)
        for item in value:
            out.add(positioned(item, loc), loc)
        return out
    return value


def to_plain(value: Any) -> Any:
    """A deep copy made of plain dicts and lists (for hashing and dumping)."""
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_plain(v) for v in value]
    return value
