"""Merging, overrides and inheritance keep provenance: every value still points at where it was written."""
import pytest

from flowspec.compiler import SpecError, compile_spec
from flowspec.compiler.errors import Location
from flowspec.compiler.locate import locate
from flowspec.compiler.overrides import apply, merge, parse_set, switch_kind
from flowspec.compiler.yamlpos import load_text, positioned
from flowspec.schemas.executor import Executor

F = "t.yaml"


def tree(text: str):
    return load_text(text, F)


def test_mappings_merge_and_scalars_and_lists_replace():
    base = tree("a: {x: 1, y: [1, 2]}\nb: 3\n")
    over = tree("a: {y: [9]}\nb: 4\n")
    merged = merge(base, over)
    assert merged == {"a": {"x": 1, "y": [9]}, "b": 4}
    assert base == {"a": {"x": 1, "y": [1, 2]}, "b": 3}  # inputs untouched


def test_a_different_kind_replaces_the_block():
    base = tree("opt: {kind: adamw, lr: 0.1, betas: [0.9, 0.99]}\n")["opt"]
    assert merge(base, tree("o: {kind: sgd, momentum: 0.5}\n")["o"]) == {"kind": "sgd", "momentum": 0.5}
    assert merge(base, tree("o: {kind: adamw, lr: 0.2}\n")["o"]) == {"kind": "adamw", "lr": 0.2, "betas": [0.9, 0.99]}


def test_merged_values_keep_their_own_positions():
    base = tree("a:\n  x: 1\n  y: 2\n")
    over = tree("\n\n\na:\n  y: 5\n")
    merged = merge(base, over)
    assert locate(merged, ("a", "x"), Location(F)) == Location(F, 2, 3)
    assert locate(merged, ("a", "y"), Location(F)) == Location(F, 5, 3)


def test_parse_set_values_are_yaml():
    assert parse_set("a.b=3").value == 3
    assert parse_set("a.b=1e-4").value == pytest.approx(1e-4)
    assert parse_set("a.b=[1, 2]").value == [1, 2]
    assert parse_set("a={kind: sgd}").value == {"kind": "sgd"}
    assert parse_set("a.b=").value is None
    with pytest.raises(SpecError, match="expected --set dotted.key=value"):
        parse_set("nokey")
    with pytest.raises(SpecError, match="not valid YAML"):
        parse_set("a=[1, 2")


def test_apply_addresses_stages_by_name_and_lists_by_index():
    t = tree("stages:\n  - {name: a, steps: 1}\n  - {name: b, steps: 2}\nxs: [1, 2, 3]\n")
    apply(t, parse_set("stages.b.steps=7"))
    apply(t, parse_set("xs.1=20"))
    apply(t, parse_set("new.deep.key=1"))
    assert t["stages"][1]["steps"] == 7 and t["xs"] == [1, 20, 3] and t["new"] == {"deep": {"key": 1}}
    assert locate(t, ("stages", 1, "steps"), Location(F)).file == "--set stages.b.steps=7"
    with pytest.raises(SpecError, match="index 5 is out of range"):
        apply(t, parse_set("xs.5=1"))


def test_positioned_wraps_plain_values():
    where = Location("--set x")
    value = positioned({"a": [1, {"b": 2}]}, where)
    assert locate(value, ("a", 1, "b"), Location(F)) == where


def test_inherited_error_is_reported_once_at_the_root_line(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "flowspec: 1\nname: x\nmodel: {kind: mlp}\n"
        "data: {source: {kind: toy2d, distribution: {kind: moons, noise: -1}}}\n"
        "stages:\n  - {name: a, kind: pretrain, steps: 1}\n  - {name: b, kind: finetune, from: a, steps: 1}\n")
    with pytest.raises(SpecError) as info:
        compile_spec(str(spec))
    assert [str(i) for i in info.value.issues] == [
        f"{spec}:4:65: data.source.distribution.noise: input should be greater than or equal to 0"]


def test_stage_override_error_points_at_the_stage_line(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "flowspec: 1\nname: x\nmodel: {kind: mlp}\n"
        "data: {source: {kind: toy2d, distribution: {kind: moons}}}\n"
        "stages:\n  - {name: a, kind: pretrain, steps: 1, optimizer: {lr: -1}}\n")
    with pytest.raises(SpecError) as info:
        compile_spec(str(spec))
    assert [str(i) for i in info.value.issues] == [f"{spec}:6:57: stages.a.optimizer.lr: input should be greater than 0"]


def test_warnings_do_not_fail_and_are_positioned(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "flowspec: 1\nname: x\nmodel: {kind: mmdit, latent: {kind: pixel}, config: {in_channels: 3, out_channels: 3}}\n"
        "data: {source: {kind: shapes}, curriculum: [{resolution: 32}, {at_step: 5, resolution: 64}]}\n"
        "timesteps: {shift: {kind: fixed, alpha: 3.0}}\n"
        "stages:\n  - {name: a, kind: pretrain, steps: 10}\n")
    plan = compile_spec(str(spec))
    assert [str(w) for w in plan.warnings] == [
        f"{spec}:5:21: warning: stages.a.timesteps.shift.kind: one fixed alpha across resolutions [32, 64]: "
        "a `resolution` shift recomputes alpha = sqrt(pixels / base pixels) at each phase"]


def validated(path, profile, sets, executor):
    """The validated spec (after the `validate` pass: the smoke batches do not split over 4 GPUs)."""
    seen = {}

    def stop_after_validate(name, state):
        if name == "validate":
            seen["spec"] = state.spec
            raise StopIteration

    with pytest.raises(StopIteration):
        compile_spec(path, profile, sets, on_pass=stop_after_validate, executor=executor)
    return seen["spec"]


def test_executor_kind_is_applied_before_set_so_its_keys_can_be_set(root):
    spec = validated(str(root / "specs/sdxl_like.yaml"), "smoke", ["executor.gpus_per_node=4"], "slurm")
    assert [(s.name, s.executor.kind, s.executor.gpus_per_node) for s in spec.stages] == [
        (name, "slurm", 4) for name in ("vae", "pretrain", "sft", "dpo", "subject_lora", "lcm")]
    assert spec.executor.gpu == "cpu"  # the smoke profile's gpu, a key both kinds have, is kept


def test_the_old_kinds_keys_are_dropped_unless_set_on_the_command_line(root):
    spec = validated(str(root / "specs/sdxl_like.yaml"), None, [], "local")  # vae's and subject_lora's: {nodes: 1}
    assert {(s.executor.kind, s.executor.gpu) for s in spec.stages} == {("local", "h100")}
    with pytest.raises(SpecError) as info:
        compile_spec(str(root / "specs/sdxl_like.yaml"), "smoke", ["executor.devices=2"], executor="slurm")
    assert str(info.value.issues[0]) == ("--set executor.devices=2: stages.vae.executor.devices: "
                                         "unknown key 'devices'")


def test_switch_kind_keeps_positions_and_names_the_command_line():
    t = tree("executor:\n  kind: local\n  devices: 2\n  mfu: 0.5\n"
             "stages:\n  - {name: a, executor: {kind: local, devices: 4}}\n  - {name: b, executor: {gpu: a100}}\n")
    switch_kind(t, "executor", "slurm", Executor, Location("--executor slurm"))
    assert t["executor"] == {"kind": "slurm", "mfu": 0.5}
    assert locate(t, ("executor", "mfu"), Location(F), at_key=False) == Location(F, 4, 8)
    assert locate(t, ("executor", "kind"), Location(F), at_key=False) == Location("--executor slurm")
    assert t["stages"][0]["executor"] == {"kind": "slurm"} and t["stages"][1]["executor"] == {"gpu": "a100"}
    with pytest.raises(SpecError, match="unknown executor kind 'slurn' \\(did you mean 'slurm'\\?\\)"):
        switch_kind(t, "executor", "slurn", Executor, Location("--executor slurn"))


def test_a_location_read_back_from_its_text_is_the_same_location():
    from flowspec.compiler import Location

    for loc in (Location("specs/a:b.yaml", 12, 3), Location("--executor slurm"), Location("runs/x/slurm.json")):
        assert Location.parse(str(loc)) == loc
