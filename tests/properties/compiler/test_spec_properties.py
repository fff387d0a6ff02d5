"""Properties of the compiler over shipped specs with random edits and random mutations."""
import json
import math

from hypothesis import given, strategies as st

from flowspec.compiler import SpecError, compile_spec
from flowspec.compiler.yamlpos import load_file, to_plain
from flowspec.schemas.base import Block, kind_tag

from ...conftest import SPECS
from ..hostile_values import hostile_scalars
from ..spec_strategies import dump_yaml

SPEC_FILES = [str(p) for p in SPECS]
ALL_KINDS = sorted({kind_tag(c) for c in Block.__subclasses__() for c in [c, *c.__subclasses__()]
                    if "kind" in c.model_fields} | {"pretrain", "finetune", "reflow", "vae", "pixel", "sgd"})


samplers = st.one_of(
    st.just({"kind": "uniform"}), st.just({"kind": "cosmap"}),
    st.builds(lambda m, s: {"kind": "logit_normal", "m": m, "s": s},
              st.floats(-2, 2), st.floats(0.05, 3)),
    st.builds(lambda s: {"kind": "mode", "scale": s}, st.floats(-1, 1.75)),
)


@st.composite
def edited_spec(draw):
    """A shipped spec (and profile) with valid random edits, as --set overrides."""
    path = draw(st.sampled_from(SPEC_FILES))
    profiles = list(load_file(path).get("profiles", {}))
    profile = draw(st.sampled_from([None, *profiles]))
    sets = [f"seed={draw(st.integers(0, 2**31))}",
            f"timesteps.sampler={json.dumps(draw(samplers))}",
            f"optimizer.lr={draw(st.floats(1e-6, 1e-2))!r}"]
    if draw(st.booleans()):
        sets.append(f"train.max_grad_norm={draw(st.floats(0.1, 10))!r}")
    return path, profile, sets


@given(edited_spec())
def test_spec_yaml_spec_round_trip_and_stable_hashes(tmp_path_factory, case):
    path, profile, sets = case
    plan = compile_spec(path, profile, sets)
    again = compile_spec(path, profile, sets)
    assert [s.hash for s in again.stages] == [s.hash for s in plan.stages]
    out = tmp_path_factory.mktemp("rt") / "spec.yaml"
    dump_yaml(plan.spec.model_dump(mode="json", by_alias=True), out)
    reloaded = compile_spec(str(out))
    assert reloaded.spec == plan.spec
    assert [s.hash for s in reloaded.stages] == [s.hash for s in plan.stages]


def descendants(plan, name: str) -> set[str]:
    found = {name}
    for stage in plan.stages:  # plan order: readers come after what they read
        if set(stage.upstream.values()) & found:
            found.add(stage.name)
    return found


@given(edited_spec(), st.data())
def test_changing_a_stage_changes_its_hash_and_its_descendants_only(case, data):
    path, profile, sets = case
    plan = compile_spec(path, profile, sets)
    stage = data.draw(st.sampled_from([s.name for s in plan.stages]))
    edits = [("seed", data.draw(st.integers(0, 2**31))), ("optimizer.betas", "[0.8, 0.95]")]
    if plan.spec_stage(stage).kind != "autoencoder":  # which has no condition to drop (the edit is refused)
        edits.append(("train.cfg_dropout", 0.0123))
    field, value = data.draw(st.sampled_from(edits))
    changed = compile_spec(path, profile, [*sets, f"stages.{stage}.{field}={value}"])
    moved = {a.name for a, b in zip(plan.stages, changed.stages) if a.hash != b.hash}
    expected = descendants(plan, stage)
    current = plan.spec.stages[[s.name for s in plan.stages].index(stage)]
    unchanged = (field == "seed" and current.seed == value) or \
                (field == "train.cfg_dropout" and math.isclose(current.train.cfg_dropout, value))
    assert moved == (set() if unchanged else expected)


def tree_paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from tree_paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from tree_paths(value, (*prefix, index))


def mutate(document, path, how, junk):
    parent = document
    for segment in path[:-1]:
        parent = parent[segment]
    last = path[-1]
    if how == "rename" and isinstance(parent, dict):
        parent[f"{last}x"] = parent.pop(last)
    elif how == "delete":
        parent.pop(last) if isinstance(parent, dict) else parent.pop(last)
    elif how == "kind":
        parent[last] = junk if last != "kind" else junk
    else:
        parent[last] = junk


junk_values = st.one_of(st.sampled_from(ALL_KINDS), st.integers(-5, 5), st.floats(allow_nan=True),
                        st.none(), st.booleans(), st.text(max_size=5), st.just([]), st.just({}),
                        st.just({"kind": "nope"}), st.just([1, "a"]), hostile_scalars())


@given(st.sampled_from(SPEC_FILES), st.data())
def test_mutated_specs_raise_only_spec_errors(tmp_path_factory, path, data):
    document = to_plain(load_file(path))
    paths = [p for p in tree_paths(document) if p]
    for _ in range(data.draw(st.integers(1, 3))):
        paths = [p for p in tree_paths(document) if p]
        target = data.draw(st.sampled_from(paths))
        mutate(document, target, data.draw(st.sampled_from(["rename", "delete", "kind", "value"])), data.draw(junk_values))
    out = tmp_path_factory.mktemp("mut") / "spec.yaml"
    dump_yaml(document, out)
    profile = data.draw(st.sampled_from([None, "smoke"]))
    try:
        compile_spec(str(out), profile)
    except SpecError as exc:
        assert exc.issues
        assert all(i.loc.file == str(out) for i in exc.issues if not i.loc.file.startswith("--set"))
