"""The spec language itself: closed, frozen, documented blocks; the generated JSON Schema is current."""
import typing

import pytest
from pydantic import BaseModel

from flowspec.schemas import Spec
from flowspec.schemas.base import Block
from flowspec.schemas.export import SCHEMA_FILE, schema_text
from flowspec.schemas.stages import STAGE_KINDS, Stage

from .conftest import run_cli


def all_blocks() -> list[type[BaseModel]]:
    found, todo = [], [Block]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls is not Block and cls.model_fields:
            found.append(cls)
    return found


def test_generated_schema_file_is_current():
    assert SCHEMA_FILE.read_text() == schema_text(), "run: flowspec schema --out schemas/flowspec.schema.json"


def test_cli_schema_prints_the_file():
    code, out, _ = run_cli("schema")
    assert code == 0 and out == SCHEMA_FILE.read_text()


@pytest.mark.parametrize("block", all_blocks(), ids=lambda c: c.__name__)
def test_every_block_is_closed_frozen_and_documented(block):
    assert block.model_config["extra"] == "forbid"
    assert block.model_config["frozen"] is True
    undocumented = [name for name, info in block.model_fields.items() if not info.description]
    assert not undocumented, f"{block.__name__} fields without a description: {undocumented}"


def test_stage_union_holds_exactly_the_life_cycle_kinds():
    members = [typing.get_args(m)[0] for m in typing.get_args(typing.get_args(Stage)[0])]
    kinds = [typing.get_args(m.model_fields["kind"].annotation)[0] for m in members]
    assert tuple(kinds) == STAGE_KINDS == (
        "autoencoder", "pretrain", "finetune", "dreambooth", "reward_feedback", "flow_grpo", "diffusion_dpo",
        "progressive_distill", "reflow", "consistency_distill", "adversarial_distill", "distribution_matching", "custom")


def test_every_stage_kind_accepts_lora():
    members = [typing.get_args(m)[0] for m in typing.get_args(typing.get_args(Stage)[0])]
    assert all("lora" in m.model_fields for m in members)


def test_reference_defaults_follow_the_algorithm_reference():
    """Field names and defaults of algorithms.md: logit-normal (0, 1), REPA lambda 0.5 at depth 8,
    DPO beta 5000, GRPO G=24 a=0.7 clip 1e-4 beta 0.04, LCM k=20 on 50 steps, mode scale 1.29."""
    from flowspec.schemas.stages import ConsistencyDistill, DiffusionDPO, FlowGRPO, Repa
    from flowspec.schemas.timesteps import LogitNormal, Mode

    assert (LogitNormal().m, LogitNormal().s, Mode().scale) == (0.0, 1.0, 1.29)
    repa = Repa.model_fields
    assert (repa["lambda_"].default, repa["depth"].default, repa["lambda_"].alias) == (0.5, 8, "lambda")
    assert DiffusionDPO.model_fields["beta"].default == 5000.0
    grpo = FlowGRPO.model_fields
    assert [grpo[k].default for k in ("group_size", "noise_level", "clip_range", "kl_beta", "adv_clip_max")] == \
        [24, 0.7, 1e-4, 0.04, 5.0]
    lcm = ConsistencyDistill.model_fields
    assert (lcm["skip"].default, lcm["num_timesteps"].default, lcm["ema_decay"].default) == (20, 50, 0.95)


def test_spec_objects_are_frozen():
    spec = Spec.model_validate({
        "flowspec": 1, "name": "x", "model": {"kind": "mlp"},
        "data": {"source": {"kind": "toy2d", "distribution": {"kind": "moons"}}},
        "stages": [{"name": "a", "kind": "pretrain", "steps": 1, "data": {"source": {"kind": "toy2d",
                    "distribution": {"kind": "moons"}}}, "timesteps": {}, "optimizer": {}, "train": {}, "executor": {}}],
    })
    with pytest.raises(Exception):
        spec.stages[0].steps = 5  # type: ignore[misc]
    # kinds left out take the union's default
    assert (spec.optimizer.kind, spec.executor.kind, spec.timesteps.sampler.kind) == ("adamw", "local", "logit_normal")


# ------------------------------------------------- values no run can use (issue 10): positioned refusals
TINY = """\
flowspec: 1
name: tiny
model:
  kind: pixart
  config: {norm_eps: 1.0e-6}
data:
  source: {kind: shapes}
  curriculum:
    - {at_step: 0, resolution: 32, aspect_ratios: [1.0, 2.0]}
optimizer: {lr: 1.0e-3}
stages:
  - name: pretrain
    kind: pretrain
    steps: 10
"""
LONG_NAME = "string should have at most 64 characters (names become folder and file names)"


def refusals(tmp_path, text: str) -> list[str]:
    """The spec's errors as the CLI prints them, file name left out."""
    from flowspec.compiler import SpecError, compile_spec

    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        compile_spec(str(path))
    return [str(issue).removeprefix(f"{path}:") for issue in info.value.issues]


def test_the_tiny_spec_compiles(tmp_path):
    from flowspec.compiler import compile_spec

    (tmp_path / "spec.yaml").write_text(TINY)
    assert compile_spec(str(tmp_path / "spec.yaml")).stages


def test_a_nan_aspect_ratio_is_refused_at_its_place(tmp_path):
    text = TINY.replace("aspect_ratios: [1.0, 2.0]", "aspect_ratios: [1.0, .nan]")
    assert refusals(tmp_path, text) == ["9:57: data.curriculum.0.aspect_ratios.1: input should be a finite number"]


@pytest.mark.parametrize("spelling", [".inf", "-.Inf", "1e999"])
def test_an_infinite_learning_rate_is_refused_at_its_place(tmp_path, spelling):
    text = TINY.replace("lr: 1.0e-3", f"lr: {spelling}")
    assert refusals(tmp_path, text) == ["10:17: optimizer.lr: input should be a finite number"]


@pytest.mark.parametrize("old, new, refusal", [
    ("norm_eps: 1.0e-6", "norm_eps: .nan", "5:22: model.config.norm_eps: input should be a finite number"),
    ("norm_eps: 1.0e-6", "norm_eps: [1, .nan]", "5:22: model.config.norm_eps: input should be a finite number (at [1])"),
    ("steps: 10\n", "steps: 10\nprofiles:\n  smoke: {optimizer.lr: .nan}\n",
     "16:25: profiles.smoke.optimizer.lr: input should be a finite number"),
    ("steps: 10\n", f"steps: 10\nprofiles:\n  smoke: {{name: {'n' * 5000}}}\n",
     "16:17: profiles.smoke.name: string should have at most 4096 characters"),
], ids=["config", "config-list", "profile-nan", "profile-huge"])
def test_values_passed_through_unchecked_keep_the_limits_of_typed_ones(tmp_path, old, new, refusal):
    """diffusers config keywords and profile values (refused even when the profile is not used)."""
    assert refusals(tmp_path, TINY.replace(old, new)) == [refusal]


def test_a_5000_character_spec_name_is_refused_at_its_place(tmp_path):
    text = TINY.replace("name: tiny", f"name: {'t' * 5000}")
    assert refusals(tmp_path, text) == [f"2:7: name: {LONG_NAME}"]


def test_a_5000_character_stage_name_is_refused_at_its_place(tmp_path):
    from flowspec.compiler import SpecError, compile_spec

    path = tmp_path / "spec.yaml"
    path.write_text(TINY.replace("- name: pretrain", f"- name: {'p' * 5000}"))
    with pytest.raises(SpecError) as info:
        compile_spec(str(path))
    [issue] = info.value.issues
    # The dotted path spells the stage by its name, as written (compiler/locate.py).
    assert (str(issue.loc), issue.message) == (f"{path}:12:11", LONG_NAME)
    assert issue.path.startswith("stages.") and issue.path.endswith(".name")


@pytest.mark.parametrize("folder, message", [
    (f"runs/{'o' * 300}", "each folder or file name in a path should be at most 255 bytes long"),
    ("runs/" + "\u00e9" * 128, "each folder or file name in a path should be at most 255 bytes long"),  # 256 bytes
    ("runs/" + "o" * 200 + "/o" * 1500, "a path should be at most 3072 bytes long"),
    ('"runs\\0x"', "a path cannot contain a NUL character"),
])
def test_an_output_folder_the_file_system_cannot_hold_is_refused(tmp_path, folder, message):
    text = TINY.replace("name: tiny\n", f"name: tiny\noutput_dir: {folder}\n")
    assert refusals(tmp_path, text) == [f"3:13: output_dir: {message}"]


@pytest.mark.parametrize("ratio", [float("nan"), float("inf"), 0.0, -1.0])
def test_bucket_sides_refuses_a_ratio_that_is_no_aspect_ratio(ratio):
    from flowspec.schemas.buckets import bucket_sides

    with pytest.raises(ValueError, match="finite number > 0"):
        bucket_sides(256, ratio, 16)
