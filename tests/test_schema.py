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
        "pretrain", "finetune", "dreambooth", "reward_feedback", "flow_grpo", "diffusion_dpo",
        "progressive_distill", "reflow", "consistency_distill", "adversarial_distill")


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
