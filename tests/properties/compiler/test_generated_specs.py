"""Properties of the compiler over specs generated from the schema (tests/properties/spec_strategies.py)."""
import copy
import difflib
import json
from typing import Annotated, Any, Literal

import pytest
from hypothesis import HealthCheck, assume, event, given, settings, strategies as st
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from flowspec.compiler import SpecError, compile_spec
from flowspec.schemas.base import tagged

from ..measuring import MEASURE
from ..spec_fixups import FIXUPS, raw_specs, specs
from ..hostile_values import hostile_scalars
from ..spec_strategies import (KIND, blocks, document_keys, dump_yaml, field_annotation, field_paths, get_in,
                               reachable_models, tagged_blocks, tagged_unions, walk_schema)

# Examples per property: the profile's (CI: 40, the file runs in about 20 s on 2 cores; thorough: 400).
EXAMPLES = settings.default.max_examples
FRACTION_EXAMPLES = 120
COVERAGE_EXAMPLES = 150
COMPILE_FLOOR = 0.6


# -------------------------------------------------------------------------------------- helpers
def write(tmp_path_factory, document, name="spec.yaml"):
    path = tmp_path_factory.mktemp("gen") / name
    dump_yaml(document, path)
    return path


def check_locations(issues, path) -> None:
    """Every issue points at a line of the spec file."""
    lines = path.read_text().count("\n") + 1
    for issue in issues:
        assert issue.loc.file == str(path), issue
        assert isinstance(issue.loc.line, int) and 1 <= issue.loc.line <= lines, issue
        assert isinstance(issue.loc.col, int) and issue.loc.col >= 1, issue


def compile_or_error(path):
    """(plan, None) or (None, SpecError) -- any other exception propagates and fails the test."""
    try:
        return compile_spec(str(path)), None
    except SpecError as exc:
        assert exc.issues, "a SpecError without issues"
        check_locations(exc.issues, path)
        return None, exc


def compiled(tmp_path_factory, document):
    """The plan of a document that compiles; other documents are rejected as examples."""
    path = write(tmp_path_factory, document)
    plan, error = compile_or_error(path)
    assume(error is None)
    return path, plan


# ----------------------------------------------------------------------- compile or SpecError
@pytest.mark.parametrize("strategy", [specs, raw_specs], ids=["fixed-up", "raw"])
def test_generated_specs_compile_or_raise_positioned_spec_errors(tmp_path_factory, strategy):
    @settings(max_examples=EXAMPLES)
    @given(strategy())
    def check(document):
        path = write(tmp_path_factory, document)
        plan, _ = compile_or_error(path)
        if plan is not None:
            check_locations(plan.warnings, path)
            json.dumps(plan.to_json())
            assert plan.as_text()

    check()


def test_fixups_make_most_generated_specs_compile(tmp_path_factory, capsys):
    outcomes = {"compiled": 0, "spec_error": 0}
    reasons: dict[str, int] = {}

    @settings(MEASURE, max_examples=FRACTION_EXAMPLES)
    @given(specs())
    def count(document):
        _, error = compile_or_error(write(tmp_path_factory, document))
        outcomes["spec_error" if error else "compiled"] += 1
        for issue in (error.issues if error else ()):
            reasons[issue.message[:60]] = reasons.get(issue.message[:60], 0) + 1

    count()
    total = sum(outcomes.values())
    fraction = outcomes["compiled"] / total
    with capsys.disabled():
        print(f"\n{outcomes['compiled']} of {total} generated specs compile ({fraction:.0%}), "
              f"{len(FIXUPS)} fix-ups; top errors: {sorted(reasons.items(), key=lambda kv: -kv[1])[:3]}")
    assert fraction >= COMPILE_FLOOR, (outcomes, reasons)


# ---------------------------------------------------------------------------------- round trip
@given(specs())
@settings(max_examples=EXAMPLES)
def test_valid_generated_specs_round_trip_with_the_same_hashes(tmp_path_factory, document):
    path, plan = compiled(tmp_path_factory, document)
    again = compile_spec(str(path))
    assert [s.hash for s in again.stages] == [s.hash for s in plan.stages]
    dumped = write(tmp_path_factory, plan.spec.model_dump(mode="json", by_alias=True), "dumped.yaml")
    reloaded = compile_spec(str(dumped))
    assert reloaded.spec == plan.spec
    assert [s.hash for s in reloaded.stages] == [s.hash for s in plan.stages]
    assert [s.seed for s in reloaded.stages] == [s.seed for s in plan.stages]


# ----------------------------------------------------------------------------------- mutations
ALL_KINDS = sorted({tag for union in tagged_unions().values() for tag in union.tags})
JUNK: tuple = ([1, "x"], {"junk": [1]}, "xyz", 7, 2.5, True, None)
_ADAPTERS: dict[tuple, TypeAdapter] = {}


def rejects(key, value) -> bool:
    """The key's own annotation refuses the value (so it is a wrong type or value there)."""
    adapter = _ADAPTERS.get((key.model, key.field))
    if adapter is None:
        adapter = _ADAPTERS[(key.model, key.field)] = TypeAdapter(field_annotation(key.info))
    try:
        adapter.validate_python(value)
    except ValidationError:
        return True
    return False


def allowed_keys(model) -> set[str]:
    """Keys pydantic takes for a model: names and aliases (populate_by_name)."""
    return {n for name, info in model.model_fields.items() for n in (name, info.alias) if n}


def spelled_keys(model) -> list[str]:
    """Keys as a user spells them (aliases first), which did-you-mean chooses from."""
    return [info.alias or name for name, info in model.model_fields.items()]


def near_misses(key: str) -> list[str]:
    """Spellings one character away from `key` (deleted, inserted, replaced, doubled)."""
    out = set()
    for i in range(len(key)):
        if len(key) > 2:
            out.add(key[:i] + key[i + 1:])
        out.add(key[:i] + key[i] + key[i:])
        for c in "aeiostx":
            out.add(key[:i] + c + key[i + 1:])
    out.add(key + "s")
    out.discard(key)
    return sorted(out)


def messages(error) -> list[str]:
    return [i.message for i in error.issues]


@given(specs(), st.sampled_from(["one_off", "far"]), st.data())
@settings(max_examples=EXAMPLES)
def test_a_misspelt_key_is_an_unknown_key_with_a_suggestion(tmp_path_factory, document, how, data):
    compiled(tmp_path_factory, document)
    keys = [k for k in document_keys(document) if k.union is None]
    key = data.draw(st.sampled_from(keys))
    old = key.path[-1]
    allowed = allowed_keys(key.model)
    candidates = [n for n in (near_misses(old) if how == "one_off" else [f"{old}_extra", f"my{old}"])
                  if n not in allowed]
    new = data.draw(st.sampled_from(candidates))
    parent = get_in(document, key.path[:-1])
    parent[new] = parent.pop(old)
    path = write(tmp_path_factory, document)
    _, error = compile_or_error(path)
    assert error is not None, f"renaming {key.path} to {new!r} compiled"
    unknown = [m for m in messages(error) if m.startswith(f"unknown key '{new}'")]
    assert unknown, (key.path, new, messages(error))
    best = difflib.get_close_matches(new, spelled_keys(key.model), n=1, cutoff=0.6)
    event(f"{how}: suggestion {'checked' if how == 'one_off' and best == [old] else 'not expected'}")
    if how == "one_off" and best == [old]:
        assert any(f"did you mean '{old}'" in m for m in unknown), (key.path, new, unknown)


@given(specs(), st.data())
@settings(max_examples=EXAMPLES)
def test_deleting_a_required_key_reports_it_missing(tmp_path_factory, document, data):
    compiled(tmp_path_factory, document)
    key = data.draw(st.sampled_from([k for k in document_keys(document) if k.required]))
    del get_in(document, key.path[:-1])[key.path[-1]]
    _, error = compile_or_error(write(tmp_path_factory, document))
    assert error is not None, f"deleting {key.path} compiled"
    name = key.path[-1]
    expected = "missing 'kind'" if key.union is not None else f"missing required key '{name}'"
    assert any(m.startswith(expected) for m in messages(error)), (key.path, messages(error))


@given(specs(), st.data())
@settings(max_examples=EXAMPLES)
def test_a_kind_of_another_union_is_an_unknown_kind(tmp_path_factory, document, data):
    compiled(tmp_path_factory, document)
    key = data.draw(st.sampled_from([k for k in document_keys(document) if k.union is not None]))
    new = data.draw(st.sampled_from([t for t in ALL_KINDS if t not in key.union.tags]))
    get_in(document, key.path[:-1])[KIND] = new
    _, error = compile_or_error(write(tmp_path_factory, document))
    assert error is not None, f"kind {new!r} at {key.path} compiled"
    assert any(m.startswith(f"unknown kind '{new}'") for m in messages(error)), (key.path, messages(error))


@given(specs(), st.data())
@settings(max_examples=EXAMPLES)
def test_a_value_of_the_wrong_type_is_a_spec_error(tmp_path_factory, document, data):
    compiled(tmp_path_factory, document)
    choices = [(k, junk) for k in document_keys(document) if k.union is None
               for junk in JUNK if rejects(k, junk) and not (k.inherited and junk is None)]
    key, junk = data.draw(st.sampled_from(choices))
    get_in(document, key.path[:-1])[key.path[-1]] = copy.deepcopy(junk)
    _, error = compile_or_error(write(tmp_path_factory, document))
    assert error is not None, f"{junk!r} at {key.path} compiled"


@given(raw_specs(), st.data())
@settings(max_examples=EXAMPLES)
def test_several_mutations_of_raw_specs_raise_only_spec_errors(tmp_path_factory, document, data):
    for _ in range(data.draw(st.integers(1, 3))):
        keys = document_keys(document)
        if not keys:
            break
        key = data.draw(st.sampled_from(keys))
        parent, last = get_in(document, key.path[:-1]), key.path[-1]
        how = data.draw(st.sampled_from(["rename", "delete", "kind", "junk", "hostile"]))
        if how == "rename":
            parent[data.draw(st.sampled_from(near_misses(last)))] = parent.pop(last)
        elif how == "delete":
            del parent[last]
        elif how == "kind":
            parent[last] = data.draw(st.sampled_from(ALL_KINDS))
        elif how == "hostile":
            parent[last] = data.draw(hostile_scalars())
        else:
            parent[last] = copy.deepcopy(data.draw(st.sampled_from(JUNK)))
    compile_or_error(write(tmp_path_factory, document))


# ------------------------------------------------------------------------------- hash locality
def readers_of(spec, name: str) -> set[str]:
    """`name` and every stage that reads it, directly or not, through from / teacher / reference."""
    found = {name}
    for stage in spec.stages:  # readers come after what they read
        refs = {stage.from_, getattr(stage, "teacher", None), getattr(stage, "reference", None)}
        if refs & found:
            found.add(stage.name)
    return found


@given(specs(), st.data())
@settings(max_examples=EXAMPLES)
def test_a_stage_seed_moves_its_hash_and_its_readers_hashes_only(tmp_path_factory, document, data):
    _, plan = compiled(tmp_path_factory, document)
    index = data.draw(st.integers(0, len(plan.stages) - 1))
    # another seed, within the schema's range (below 2^63)
    document["stages"][index]["seed"] = (plan.stages[index].seed + data.draw(st.integers(1, 1000))) % 2**63
    changed = compile_spec(str(write(tmp_path_factory, document)))
    moved = {a.name for a, b in zip(plan.stages, changed.stages) if a.hash != b.hash}
    assert moved == readers_of(plan.spec, plan.stages[index].name)


# ------------------------------------------------------------------------- coverage of the walker
def test_generated_specs_show_every_stage_kind_and_model_family():
    """Within a bounded number of examples, every member of the stage and model unions appears
    (the expected kinds are read from the schema, so a new kind is expected here too)."""
    unions = tagged_unions()
    want = {"stages[]": set(unions["stages[]"].tags), "model": set(unions["model"].tags)}
    seen: dict[str, set] = {"stages[]": set(), "model": set()}

    @settings(MEASURE, max_examples=COVERAGE_EXAMPLES)
    @given(specs())
    def collect(document):
        seen["stages[]"].update(s[KIND] for s in document["stages"])
        seen["model"].add(document["model"][KIND])

    collect()
    assert seen == want, {k: want[k] - seen[k] for k in want}


def _only_validator_errors(model_or_adapter, document) -> list:
    """Errors other than those of a block's own validators (which tie fields together)."""
    try:
        model_or_adapter.validate_python(document) if isinstance(model_or_adapter, TypeAdapter) \
            else model_or_adapter.model_validate(document)
    except ValidationError as exc:
        return [e for e in exc.errors() if e["type"] != "value_error"]
    return []


MODELS = reachable_models()
# One (path, annotation, union) per distinct tagged union of the schema.
UNIONS = {tuple(u.members.items()): (path, Annotated[(tp, *meta)], u)
          for path, tp, meta, u in walk_schema() if u is not None}


# One model per test: all of them drawn in one example outgrow hypothesis's buffer, which then rejects
# nearly every attempt (560 invalid draws, 90 s, for 5 examples).
@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@given(st.data())
# Every block with every field is large by design (an enumeration, not a search): size checks do not apply.
@settings(max_examples=5, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                 HealthCheck.large_base_example])
def test_the_walker_writes_every_block_of_the_schema_with_every_field(model, data):
    """Deterministic enumeration: every model reachable from Spec, with all its fields written,
    validates (only cross-field validators may object: they are what the fix-ups are for)."""
    document = data.draw(blocks(model, everything=True, inherit=False), label=model.__name__)
    assert _only_validator_errors(model, document) == [], model.__name__


@given(st.data())
# Every block with every field is large by design (an enumeration, not a search): size checks do not apply.
@settings(max_examples=5, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                 HealthCheck.large_base_example])
def test_the_walker_writes_every_kind_of_every_union(data):
    """Deterministic enumeration: each member of each tagged union (kind written, and left out for
    the default) validates as that member."""
    for path, annotation, union in UNIONS.values():
        adapter = TypeAdapter(annotation)
        for tag in union.tags:
            for with_kind in ([True, False] if tag == union.default else [True]):
                document = data.draw(tagged_blocks(union, only=tag, inherit=False, with_kind=with_kind))
                assert (KIND in document) == with_kind
                assert _only_validator_errors(adapter, document) == [], (path, tag)
                try:
                    assert isinstance(adapter.validate_python(document), union.members[tag]), (path, tag)
                except ValidationError:
                    pass  # a block's own validator objected (checked above): the member was chosen
    assert {"pretrain", "dit", "toy2d", "repa", "wandb"} <= set(ALL_KINDS)
    assert len(field_paths()) > 500


# A schema the walker has never seen: new kinds, a new field of each annotation it handles.
class _Probe(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Alpha(_Probe):
    kind: Literal["alpha"] = "alpha"
    count: int = Field(ge=3, le=5)
    ratio: float = Field(0.5, gt=0, lt=1)
    word: str = Field("ab", pattern=r"^[a-z]{2}$")


class _Beta(_Probe):
    kind: Literal["beta"] = "beta"
    pair: tuple[int, Literal["x", "y"]]
    items: list[Annotated[int, Field(gt=10)]] = Field(min_length=2)
    table: dict[str, float] = Field(default_factory=dict)
    fixed: int = Field(0, frozen=True)


class _Root(_Probe):
    block: tagged(_Alpha, _Beta, default="alpha")
    maybe: _Alpha | None = None
    many: list[tagged(_Alpha, _Beta, default="beta")] = Field(default_factory=list)
    anything: Any = None


def test_the_walker_follows_a_new_schema_without_changes():
    seen: set = set()

    @settings(MEASURE, max_examples=60)
    @given(blocks(_Root))
    def check(document):
        _Root.model_validate(document)
        assert "fixed" not in json.dumps(document)
        seen.add(document["block"].get("kind", "alpha (default)"))
        seen.update(f"field {k}" for k in document)

    check()
    assert seen >= {"alpha", "beta", "alpha (default)", "field maybe", "field many", "field anything"}
    assert "block.<beta>.items[]" in field_paths(_Root)
    assert set(tagged_unions(_Root)) == {"block", "many[]"}  # `maybe` is a plain optional model
    assert _Alpha in reachable_models(_Root) and _Beta in reachable_models(_Root)
