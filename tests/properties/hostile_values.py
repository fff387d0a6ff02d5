"""Values no spec may hold, for the fuzzing of shipped specs (compiler/test_hostile_values.py) and the
mutation properties (compiler/test_spec_properties.py): non-finite numbers as YAML spells them, strings
longer than any limit, names past NAME_MAX, control characters and other odd text."""
from __future__ import annotations

import math
from typing import Any, Iterator

from flowspec.schemas.base import NAME_MAX, STR_MAX
from hypothesis import strategies as st

from .spec_strategies import get_in

# YAML spellings of numbers no run can use (1e999 overflows to inf when the YAML is read).
NON_FINITE_YAML = (".nan", ".NaN", ".NAN", ".inf", ".Inf", ".INF", "+.inf", "-.inf", "-.Inf", "-.INF",
                   "1e999", "-1e999")
# Text that trips file systems, terminals, YAML and regexes.
ODD_TEXT = ("a\x00b", "tab\there", "line\nbreak", "\u202eright-to-left", "zero\u200bwidth", "e\u0301",
            "emoji \U0001f984\U0001f680", "\u65e5\u672c\u8a9e", "\u00e9" * 200, "x" * 300, "a/" * 300,
            "../../etc/passwd", "C:\\windows", "~/$HOME/${x}", "{{ prompt }", "%s%n", "*[(?", "null", "true",
            ".nan", "1e999", "- a", "#", "'\"", " ")


def scalar_leaves(doc: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """(path, value) of every scalar of a document: mapping values and list items, depth first."""
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else None
    if items is None:
        yield path, doc
        return
    for key, value in items:
        yield from scalar_leaves(value, (*path, key))


def set_in(doc: Any, path: tuple, value: Any) -> None:
    get_in(doc, path[:-1])[path[-1]] = value


def huge_text(like: str = "a") -> st.SearchStrategy[str]:
    """Thousands of characters, more than any string of a spec may hold, built on `like` (a name stays
    a match of its pattern)."""
    return st.integers(STR_MAX + 1, 2 * STR_MAX).map(lambda n: (like[:1] or "a") * (n - len(like)) + like)


def long_name(like: str = "a") -> st.SearchStrategy[str]:
    """Longer than a name may be but within the string limit, still a match of the name's pattern."""
    return st.integers(NAME_MAX + 1, STR_MAX).map(lambda n: (like[:1] or "a") * max(n - len(like), 1) + like)


def odd_text() -> st.SearchStrategy[str]:
    """Control characters, NUL, bidi marks, combining marks, any script, path tricks, YAML look-alikes."""
    anything = st.characters(codec="utf-8")  # controls and line separators included
    return st.one_of(st.sampled_from(ODD_TEXT), st.text(anything, min_size=1, max_size=40))


def hostile_scalars() -> st.SearchStrategy[Any]:
    """A value no run can use (or a strange one that must still compile): for mutation tests."""
    return st.one_of(st.sampled_from([math.nan, math.inf, -math.inf]), huge_text(), long_name(), odd_text())
