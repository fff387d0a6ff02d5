"""Spec documents generated from the schema: a generic walker over the pydantic models of `Spec`.

`blocks(model)` / `values(annotation)` follow the annotations of the models, so a new field, a new
block or a new `kind` is generated without touching this file. How each annotation is drawn:

- a pydantic model: a mapping with every required field plus a few optional ones (at most
  MAX_OPTIONAL, picked at random; `everything=True` writes them all); fields marked `frozen=True`
  are constants and never written; keys are written under their alias (`from`, `lambda`);
- a `tagged(...)` union (an Annotated Union of `Annotated[Model, Tag(kind)]` with a callable
  `Discriminator` in its metadata): one member, with `kind: <tag>` written, or sometimes left out
  when the member is the union's default (what the discriminator says of `{}`); inside a stage's
  override of a root block `kind` is always written and the member is complete (a block of another
  kind replaces the root's block instead of merging into it);
- `X | None`: None about one time in four; any other union: any member;
- `Literal[...]`: one of its values;
- int / float: inside the gt/ge/lt/le of the field's metadata (or of an `Annotated[..., Field(...)]`
  inside the annotation); a side left open gets a small span (SPAN_INT, SPAN_FLOAT); a number with
  no bound at all is small and positive; bool: either;
- str: a match of the field's `pattern` (ASCII, within its max_length), else a short word: letters and
  digits, or any printable unicode (accents, CJK, emoji, right-to-left marks) one time in two;
- `list[X]`: min_length items (MinLen) plus up to MAX_EXTRA_ITEMS more, each complete (a list in a
  stage override replaces the root's list); `tuple[X, Y]`: one of each; `tuple[X, ...]`: 1-2 items;
  `dict[str, X]`: up to two entries under short names; tuples come out as lists (plain data);
- `Any` (pass-through keys of the diffusers configs, profile values): a small scalar;
- anything else raises TypeError, so a new kind of annotation is noticed, not skipped.

The one thing the walker knows about the compiler: its `inherit` pass fills the stage blocks named in
`INHERITED_BLOCKS` from the root blocks, so in a stage those blocks are optional and partial (no key
required; tagged members inside them stay complete).

`raw_specs()` (spec_fixups.py) are documents shaped by the schema alone. `specs()` also applies FIXUPS, a short list
of documented edits that make most documents pass the compiler's semantic checks (spec_fixups.py).
`walk_schema`, `field_paths`, `tagged_unions`, `reachable_models` enumerate the schema;
`document_keys` reads a generated document back against the schema (for mutations); hostile_values.py
holds the values mutation tests write into documents: values no run can use, which the compiler must
refuse with positioned SpecErrors (issue 10: a NaN aspect ratio and a 5000-character name crashed it).
"""
from __future__ import annotations

import functools
import io
import json
import string
import types
import typing
from dataclasses import dataclass
from typing import Any, Iterator, Literal

from flowspec.schemas import Spec
from flowspec.schemas.base import STR_MAX
from flowspec.schemas.stages import INHERITED_BLOCKS, StageBase
from hypothesis import strategies as st
from pydantic import BaseModel, Discriminator, Tag
from pydantic.fields import FieldInfo

MAX_OPTIONAL = 3  # optional fields written per block
MAX_EXTRA_ITEMS = 1  # list items beyond min_length
SPAN_INT = 6  # width of an int range open on one side
SPAN_FLOAT = 8.0
UNBOUNDED_INTS = (0, 1000)
UNBOUNDED_FLOATS = (0.125, 4.0)
WORD = string.ascii_letters + string.digits
PATTERN_ALPHABET = string.ascii_letters + string.digits + "_.-:/"
# Printable text in any script; control characters and line separators are the hostile values' job.
UNICODE = st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp"))
KIND = "kind"  # the key `tagged` unions are told apart by (schemas/base.py)

_NONE = type(None)
_UNIONS = (typing.Union, types.UnionType)
_BOUNDS = ("gt", "ge", "lt", "le", "min_length", "max_length", "pattern")


# ------------------------------------------------------------------------------- the annotations
def unwrap(tp: Any, meta: tuple = ()) -> tuple[Any, tuple]:
    """(bare type, metadata): Annotated layers peeled off, FieldInfo metadata flattened in."""
    while typing.get_origin(tp) is typing.Annotated:
        tp, *extra = typing.get_args(tp)
        meta = (*meta, *extra)
    flat: list = []
    for item in meta:
        flat += unwrap(Any, tuple(item.metadata))[1] if isinstance(item, FieldInfo) else [item]
    return tp, tuple(flat)


@dataclass(frozen=True)
class Tagged:
    """A `tagged(...)` union: {tag: model} in declaration order, and the tag a block without `kind` gets."""

    members: dict[str, type[BaseModel]]
    default: str | None

    @property
    def tags(self) -> list[str]:
        return list(self.members)


def tagged_of(tp: Any, meta: tuple = ()) -> Tagged | None:
    """The tagged union an annotation is (None if it is not one): the members come from the `Tag`s,
    the default from what the `Discriminator` says of a mapping without `kind`."""
    tp, meta = unwrap(tp, meta)
    disc = next((m for m in meta if isinstance(m, Discriminator)), None)
    if disc is None:
        return None
    single = typing.get_origin(tp) not in _UNIONS  # a one-member union collapses to its member
    members: dict[str, type[BaseModel]] = {}
    for arg in ((tp,) if single else typing.get_args(tp)):
        model, arg_meta = unwrap(arg, meta if single else ())
        members[next(m.tag for m in arg_meta if isinstance(m, Tag))] = model
    default = None
    if callable(disc.discriminator):
        try:
            default = disc.discriminator({})
        except Exception:  # noqa: BLE001 - a discriminator that insists on a kind has no default
            default = None
    return Tagged(members, default if default in members else None)


def bounds(meta: tuple) -> dict[str, Any]:
    """gt/ge/lt/le/min_length/max_length/pattern found in the metadata."""
    return {name: getattr(m, name) for m in meta for name in _BOUNDS if getattr(m, name, None) is not None}


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _inherited(model: type[BaseModel]) -> tuple[str, ...]:
    return INHERITED_BLOCKS if issubclass(model, StageBase) else ()


def field_annotation(info: FieldInfo) -> Any:
    """The field's annotation with its constraints, for a TypeAdapter."""
    return typing.Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation


# ------------------------------------------------------------------------------------ the walker
def values(tp: Any, meta: tuple = (), *, partial: bool = False, everything: bool = False,
           inherit: bool = True) -> st.SearchStrategy:
    """Values of annotation `tp` (with field metadata `meta`), as plain data."""
    try:
        return _cached_values(tp, meta, partial, everything, inherit)
    except TypeError as exc:  # unhashable metadata: build it afresh
        if "unhashable" not in str(exc):
            raise
        return _values(tp, meta, partial, everything, inherit)


@functools.lru_cache(maxsize=None)
def _cached_values(tp, meta, partial, everything, inherit) -> st.SearchStrategy:
    return _values(tp, meta, partial, everything, inherit)


def _values(tp: Any, meta: tuple, partial: bool, everything: bool, inherit: bool) -> st.SearchStrategy:
    kw = dict(everything=everything, inherit=inherit)
    tp, meta = unwrap(tp, meta)
    union = tagged_of(tp, meta)
    if union is not None:
        return tagged_blocks(union, partial=partial, **kw)
    if tp is Any:
        return st.one_of(st.booleans(), st.integers(0, 8), st.text(WORD, min_size=1, max_size=6))
    if tp is _NONE:
        return st.none()
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return st.sampled_from(args)
    if origin in _UNIONS:
        present = [a for a in args if a is not _NONE]
        some = st.one_of([values(a, meta, partial=partial, **kw) for a in present])
        if len(present) < len(args):
            return st.integers(0, 3).flatmap(lambda k: st.none() if k == 0 else some)
        return some
    if _is_model(tp):
        return blocks(tp, partial=partial, **kw)
    b = bounds(meta)
    if origin is list:
        lo = b.get("min_length", 0)
        return st.lists(values(args[0], **kw), min_size=lo, max_size=b.get("max_length", max(lo, 1) + MAX_EXTRA_ITEMS))
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return st.lists(values(args[0], **kw), min_size=1, max_size=2)
        return st.tuples(*(values(a, **kw) for a in args)).map(list)
    if origin is dict:
        return st.dictionaries(names(), values(args[1], **kw), max_size=2)
    if tp is bool:
        return st.booleans()
    if tp is int:
        return _ints(b)
    if tp is float:
        return _floats(b)
    if tp is str:
        if "pattern" in b:
            most = b.get("max_length", STR_MAX)
            matches = st.from_regex(b["pattern"], fullmatch=True, alphabet=PATTERN_ALPHABET)
            return matches.filter(lambda s: len(s) <= most)
        return st.one_of(st.text(WORD, min_size=1, max_size=8), st.text(UNICODE, min_size=1, max_size=8))
    raise TypeError(f"spec_strategies: no strategy for the annotation {tp!r}: teach `values` about it")


def names() -> st.SearchStrategy[str]:
    return st.text(string.ascii_lowercase, min_size=1, max_size=6)


def _ints(b: dict) -> st.SearchStrategy[int]:
    lo = b["gt"] + 1 if "gt" in b else b.get("ge")
    hi = b["lt"] - 1 if "lt" in b else b.get("le")
    if lo is None and hi is None:
        lo, hi = UNBOUNDED_INTS
    lo = hi - SPAN_INT if lo is None else lo
    hi = lo + SPAN_INT if hi is None else hi
    return st.integers(int(lo), int(hi))


def _floats(b: dict) -> st.SearchStrategy[float]:
    lo, hi = b.get("gt", b.get("ge")), b.get("lt", b.get("le"))
    if lo is None and hi is None:
        lo, hi = UNBOUNDED_FLOATS
    lo = hi - SPAN_FLOAT if lo is None else lo
    hi = lo + SPAN_FLOAT if hi is None else hi
    return st.floats(float(lo), float(hi), exclude_min="gt" in b, exclude_max="lt" in b,
                     allow_nan=False, allow_infinity=False)


@st.composite
def blocks(draw, model: type[BaseModel], *, partial: bool = False, everything: bool = False,
           inherit: bool = True, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """A mapping for `model`: its required fields and a few optional ones (all: everything=True).
    partial: nothing is required (a stage's override of a root block). inherit=False: a stage's
    inherited blocks are complete and required, as pydantic sees them."""
    fields = [(n, f) for n, f in model.model_fields.items() if n not in skip and not f.frozen]
    inherited = _inherited(model) if inherit else ()
    required = {n for n, f in fields if f.is_required() and not partial and n not in inherited}
    optional = [n for n, _ in fields if n not in required]
    if everything:
        chosen = set(optional)
    elif optional:
        chosen = set(draw(st.lists(st.sampled_from(optional), max_size=min(MAX_OPTIONAL, len(optional)), unique=True)))
    else:
        chosen = set()
    out: dict[str, Any] = {}
    for name, info in fields:  # declaration order
        if name in required or name in chosen:
            out[info.alias or name] = draw(values(info.annotation, tuple(info.metadata),
                                                  partial=partial or name in inherited,
                                                  everything=everything, inherit=inherit))
    return out


@st.composite
def tagged_blocks(draw, union: Tagged, *, partial: bool = False, everything: bool = False,
                  inherit: bool = True, only: str | None = None, with_kind: bool | None = None) -> dict[str, Any]:
    """A block of one member of a tagged union (`only`: that member; with_kind: write `kind` or not)."""
    tag = only if only is not None else draw(st.sampled_from(union.tags))
    body = draw(blocks(union.members[tag], everything=everything, inherit=inherit, skip=(KIND,)))
    if with_kind is None:
        with_kind = partial or tag != union.default or draw(st.booleans())
    return {KIND: tag, **body} if with_kind else body


# ------------------------------------------------------------------------ enumerating the schema
def walk_schema(root: type[BaseModel] = Spec) -> Iterator[tuple[str, Any, tuple, Tagged | None]]:
    """(dotted path, annotation, metadata, tagged union or None) of everything reachable from `root`.

    Paths read like `stages[].<pretrain>.data.curriculum[].resolution`: `<tag>` is a union member,
    `[]` a list or tuple item, `{}` a dict value. A path may come more than once (an optional field
    is visited as the union and as its member)."""

    def visit(path: str, tp: Any, meta: tuple, stack: tuple):
        union = tagged_of(tp, meta)
        bare, meta = unwrap(tp, meta)
        yield path, bare, meta, union
        if union is not None:
            for tag, model in union.members.items():
                yield from fields(f"{path}.<{tag}>", model, stack)
            return
        if _is_model(bare):
            yield from fields(path, bare, stack)
            return
        origin, args = typing.get_origin(bare), typing.get_args(bare)
        if origin in _UNIONS:
            for a in args:
                if a is not _NONE:
                    yield from visit(path, a, meta, stack)
        elif origin in (list, tuple):
            for a in args:
                if a is not Ellipsis:
                    yield from visit(f"{path}[]", a, (), stack)
        elif origin is dict:
            yield from visit(f"{path}{{}}", args[1], (), stack)

    def fields(path: str, model: type[BaseModel], stack: tuple):
        if model in stack:  # a recursive schema: stop at the second visit
            return
        for name, info in model.model_fields.items():
            key = info.alias or name
            yield from visit(f"{path}.{key}" if path else key, info.annotation, tuple(info.metadata), (*stack, model))

    yield from fields("", root, ())


def tagged_unions(root: type[BaseModel] = Spec) -> dict[str, Tagged]:
    """{path: union} of every tagged union reachable from `root`."""
    return {path: union for path, _, _, union in walk_schema(root) if union is not None}


def reachable_models(root: type[BaseModel] = Spec) -> list[type[BaseModel]]:
    """Every model class reachable from `root` (root first), each once."""
    found: dict[type, None] = {root: None}
    for _, tp, _, union in walk_schema(root):
        for model in (union.members.values() if union is not None else [tp] if _is_model(tp) else []):
            found.setdefault(model)
    return list(found)


def field_paths(root: type[BaseModel] = Spec) -> list[str]:
    """The dotted path of every field reachable from `root` (see walk_schema)."""
    return sorted({path for path, *_ in walk_schema(root)})


# ----------------------------------------------------------------- reading a document by schema
@dataclass(frozen=True)
class Key:
    """One key written in a generated document, with what the schema says of it."""

    path: tuple  # keys and list indices from the root
    model: type[BaseModel]  # the block holding the key
    field: str  # the field's name in the model (the key is its alias, if any)
    info: FieldInfo
    required: bool  # leaving it out is an error here (not inside a stage's partial override)
    union: Tagged | None = None  # for a `kind` key: the union it picks a member of
    inherited: bool = False  # a stage block the compiler fills from the root (null: inherit it all)


def document_keys(doc: dict, root: type[BaseModel] = Spec) -> list[Key]:
    """Every model field written in `doc`, found by reading the document alongside the schema."""
    out: list[Key] = []

    def model_node(node: Any, model: type[BaseModel], path: tuple, partial: bool, union: Tagged | None):
        by_key = {info.alias or name: (name, info) for name, info in model.model_fields.items()}
        for key, value in node.items():
            if key not in by_key:
                continue
            name, info = by_key[key]
            if key == KIND and union is not None:
                out.append(Key((*path, key), model, name, info, union.default is None and not partial, union))
                continue
            inherited = name in _inherited(model)
            out.append(Key((*path, key), model, name, info, info.is_required() and not partial and not inherited,
                           inherited=inherited))
            any_node(value, info.annotation, tuple(info.metadata), (*path, key), partial or inherited)

    def any_node(node: Any, tp: Any, meta: tuple, path: tuple, partial: bool):
        union = tagged_of(tp, meta)
        bare, meta = unwrap(tp, meta)
        if union is not None:
            tag = node.get(KIND, union.default) if isinstance(node, dict) else None
            if isinstance(tag, str) and tag in union.members:
                model_node(node, union.members[tag], path, partial, union)
        elif _is_model(bare):
            if isinstance(node, dict):
                model_node(node, bare, path, partial, None)
        elif typing.get_origin(bare) in _UNIONS:
            for a in typing.get_args(bare):
                if a is not _NONE:
                    any_node(node, a, meta, path, partial)
        elif typing.get_origin(bare) in (list, tuple) and isinstance(node, list):
            args = typing.get_args(bare)
            for i, item in enumerate(node):  # list items replace the root's list: complete again
                sub = args[0] if len(args) == 1 or args[-1] is Ellipsis else args[min(i, len(args) - 1)]
                any_node(item, sub, (), (*path, i), False)
        elif typing.get_origin(bare) is dict and isinstance(node, dict):
            for k, item in node.items():
                any_node(item, typing.get_args(bare)[1], (), (*path, k), False)

    model_node(doc, root, (), False, None)
    return out


def get_in(doc: Any, path: tuple) -> Any:
    for segment in path:
        doc = doc[segment]
    return doc


def all_dicts(node: Any) -> Iterator[dict]:
    """Every mapping inside node (node included), depth first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from all_dicts(value)
    elif isinstance(node, list):
        for value in node:
            yield from all_dicts(value)


def kinds_in(doc: Any) -> set[str]:
    """Every `kind` written in a document."""
    return {d[KIND] for d in all_dicts(doc) if isinstance(d.get(KIND), str)}


def dump_yaml(document, path) -> None:
    """Write a generated document as a YAML file (plain data: tuples become lists)."""
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    buffer = io.StringIO()
    yaml.dump(json.loads(json.dumps(document)), buffer)
    path.write_text(buffer.getvalue())
