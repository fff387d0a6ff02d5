"""Sample filters (`data.source.filters`): keep a sample when every filter passes.

A filter names one field, the caption or a metadata key, and every condition it gives must hold:
`contains` (case-insensitive), `regex` (searched anywhere), `min`/`max` (numbers only) and
`equals`. A sample that lacks the field does not pass: a misspelled key must show up as a filter
that removes everything, with `missing_fields` telling the caller why, not as a silent no-op.
"""
from __future__ import annotations

import functools
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence

CAPTION = "caption"
FILE = "file"  # the sample's file: its path in an image folder, its key in a webdataset
FILE_KEY = "\0file"  # where a source puts the sample's file in the meta it filters (no metadata key can be it)
_MISSING = object()


@functools.lru_cache(maxsize=64)
def _listed(path: str) -> frozenset[str]:
    """The entries of a `one_of_file` list, read once."""
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"filter one_of_file {path}: cannot read it ({exc})") from None
    return frozenset(line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#"))


@functools.lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern:
    # Filters run once per sample over millions of samples: compile each pattern once.
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"filter regex {pattern!r} is not a valid regular expression: {exc}") from None


def validate(filters: Sequence) -> None:
    """Raise ValueError now for a bad regex, rather than at the first sample that reaches it."""
    for f in filters:
        if f.regex is not None:
            _compiled(f.regex)
        if f.one_of_file is not None:
            _listed(f.one_of_file)


def _value(f, caption: str, meta: dict):
    if f.field == CAPTION:
        return caption
    value = meta.get(FILE_KEY if f.field == FILE else f.field, _MISSING)
    # JSON null is how metadata exporters write "no value": treat it as missing, not as "null".
    return _MISSING if value is None else value


def _number(value) -> float | None:
    """A finite float, or None. Numeric strings count (metadata often comes from CSV); bools do not."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _text(value) -> str:
    # JSON spelling for non-strings, so `equals: "true"` matches a JSON true and "[1, 2]" a list.
    return value if isinstance(value, str) else json.dumps(value)


def _equal(value, target) -> bool:
    a, b = _number(value), _number(target)
    if a is not None and b is not None:
        return a == b  # 5 == 5.0 == "5": YAML and JSON disagree about ints and floats
    return _text(value) == _text(target)


def _holds(f, value) -> bool:
    if f.contains is not None and f.contains.lower() not in _text(value).lower():
        return False
    if f.regex is not None and _compiled(f.regex).search(_text(value)) is None:
        return False
    if f.min is not None or f.max is not None:
        number = _number(value)
        if number is None:
            return False
        if (f.min is not None and number < f.min) or (f.max is not None and number > f.max):
            return False
    if f.one_of is not None and _text(value) not in f.one_of:
        return False
    if f.one_of_file is not None and _text(value) not in _listed(f.one_of_file):
        return False
    return f.equals is None or _equal(value, f.equals)


def passes(filters: Sequence, caption: str, meta: dict) -> bool:
    """True when every filter passes for this sample (no filters: always True)."""
    for f in filters:
        value = _value(f, caption, meta)
        if value is _MISSING or not _holds(f, value):
            return False
    return True


def with_file(meta: dict, file: str) -> dict:
    """The meta a source filters on: its metadata plus the sample's file (`field: file`)."""
    return {**meta, FILE_KEY: file}


def passed_count(filters: Sequence, caption: str, meta: dict) -> int:
    """How many of the filters, in order, this sample passes before the first that removes it."""
    for i, f in enumerate(filters):
        value = _value(f, caption, meta)
        if value is _MISSING or not _holds(f, value):
            return i
    return len(filters)


def kept_after_each(filters: Sequence, samples: Iterable[tuple[str, dict]]) -> list[int]:
    """How many samples pass the first filter, the first two, ... (one count per filter, in order)."""
    counts = [0] * len(filters)
    for caption, meta in samples:
        for i in range(passed_count(filters, caption, meta)):
            counts[i] += 1
    return counts


def by_filter(filters: Sequence, samples: Iterable[tuple[str, dict]]) -> list[dict]:
    """For reports: each filter, described, with how many samples were left after it."""
    return described(filters, kept_after_each(filters, samples))


def described(filters: Sequence, counts: Sequence[int]) -> list[dict]:
    return [{"filter": _describe(f), "kept": n} for f, n in zip(filters, counts)]


def missing_fields(filters: Sequence, caption: str, meta: dict) -> list[str]:
    """The metadata fields named by `filters` that this sample lacks (each once, in filter order)."""
    missing = [f.field for f in filters if _value(f, caption, meta) is _MISSING]
    return list(dict.fromkeys(missing))


def count_missing(filters: Sequence, samples: Iterable[tuple[str, dict]]) -> dict[str, int]:
    """For (caption, meta) pairs: how many samples lacked each filtered field (only fields with > 0)."""
    counts: Counter = Counter()
    for caption, meta in samples:
        counts.update(missing_fields(filters, caption, meta))
    return dict(counts)


def _describe(f) -> str:
    parts = []
    if f.contains is not None:
        parts.append(f"contains {f.contains!r} (any case)")
    if f.regex is not None:
        parts.append(f"matches /{f.regex}/")
    if f.min is not None:
        parts.append(f">= {f.min:g}")
    if f.max is not None:
        parts.append(f"<= {f.max:g}")
    if f.equals is not None:
        parts.append(f"== {f.equals!r}")
    if f.one_of is not None:
        parts.append(f"is one of {len(f.one_of)} listed")
    if f.one_of_file is not None:
        parts.append(f"is listed in {f.one_of_file}")
    if not parts:
        return f"{f.field} is present"
    return f"{f.field} " + " and ".join(parts)


def explain(filters: Sequence) -> str:
    """One line for plans and logs, e.g. "keep samples where caption contains 'dog' (any case); score >= 5"."""
    if not filters:
        return "keep every sample (no filters)"
    return "keep samples where " + "; ".join(_describe(f) for f in filters)
