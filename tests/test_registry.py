"""The stage kinds of the spec language and the runtime's operators stay in step: every kind declares what
it needs once (schemas/stages/), its objective module registers under the name it declares, every op a plan
can hold is an operator or is refused at its line before anything runs, and the shipped specs resolve."""
from pathlib import Path

import pytest

from flowspec.compiler import SpecError, compile_spec
from flowspec.runtime.objectives import COSTS, OBJECTIVES
from flowspec.runtime.ops import OPS, resolve
from flowspec.schemas.stages import STAGE_CLASSES, STAGE_KINDS

from .conftest import ROOT

# One stage of every built-in kind, chained, on a spec small enough to compile fast.
EVERY_KIND = """\
flowspec: 1
name: every
model: {kind: mmdit, preset: tiny, latent: {kind: vae, preset: tiny, from: autoencoder}}
data: {source: {kind: shapes}, curriculum: [{at_step: 0, resolution: 32}]}
train: {global_batch: 8}
stages:
  - {name: autoencoder, kind: autoencoder, steps: 10}
  - {name: pretrain, kind: pretrain, steps: 10, aux_losses: [{kind: repa, depth: 1}]}
  - {name: finetune, kind: finetune, from: pretrain, steps: 10}
  - {name: dreambooth, kind: dreambooth, from: finetune, steps: 10, instance_data: {kind: shapes, num_images: 4},
     instance_prompt: a sks shape, prior: {class_prompt: a shape}}
  - {name: reward_feedback, kind: reward_feedback, from: finetune, steps: 10, reward: {kind: shapes_color},
     prompt_enhancer: {kind: identity}}
  - {name: flow_grpo, kind: flow_grpo, from: finetune, steps: 10, group_size: 4, reward: {kind: shapes_checker},
     gold: {reward: {kind: shapes_color}, every: 5}}
  - {name: diffusion_dpo, kind: diffusion_dpo, from: finetune, steps: 10, pairs: {kind: generated, reward: {kind: shapes_checker}}}
  - {name: progressive_distill, kind: progressive_distill, from: finetune, steps: 10}
  - {name: reflow, kind: reflow, from: finetune, steps: 10}
  - {name: consistency_distill, kind: consistency_distill, from: finetune, steps: 10}
  - {name: adversarial_distill, kind: adversarial_distill, from: finetune, steps: 10, lora: {rank: 2}}
  - {name: distribution_matching, kind: distribution_matching, from: finetune, steps: 10}
"""
SHIPPED = sorted((ROOT / "specs").glob("*.yaml")) + sorted((ROOT / "examples").glob("*/spec.yaml"))


@pytest.fixture(scope="module")
def every_kind(tmp_path_factory):
    path = tmp_path_factory.mktemp("registry") / "every.yaml"
    path.write_text(EVERY_KIND)
    return compile_spec(str(path), resolver=resolve)


def test_the_spec_exercises_every_built_in_kind(every_kind):
    assert sorted(s.kind for s in every_kind.stages) == sorted(k for k in STAGE_KINDS if k != "custom")


def test_every_kind_has_a_cost_model_and_every_objective_a_kind():
    declared = {cls.objective for cls in STAGE_CLASSES if cls.objective}
    assert declared == set(COSTS), "a kind's objective without a cost model, or a cost model no kind uses"
    assert set(OBJECTIVES) <= declared, "an objective no stage kind runs"


def test_every_operator_is_an_op_some_kind_plans(every_kind):
    planned = {op.op for stage in every_kind.stages for op in stage.ops}
    assert set(OPS) <= planned, f"operators no plan holds: {set(OPS) - planned}"


def test_an_op_resolves_exactly_when_its_operator_and_objective_exist(every_kind):
    for stage in every_kind.stages:
        for op in stage.ops:
            runs = op.op in OPS and (op.op != "train" or op.params["objective"] in OBJECTIVES)
            assert (op.missing is None) == runs, (stage.name, op)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
@pytest.mark.parametrize("profile", [None, "smoke"])
def test_shipped_specs_resolve_or_are_refused_at_the_lines_of_their_ops(path, profile):
    if profile and "smoke:" not in path.read_text():
        pytest.skip("no smoke profile")
    plan = compile_spec(str(path), profile, resolver=resolve)
    refused = {(s.name, op.op): op.loc for s in plan.stages for op in s.ops if op.missing}
    for stage in plan.stages:
        assert all(op.op in OPS for op in stage.ops if not op.missing)
    if not refused:
        compile_spec(str(path), profile, resolver=resolve, runnable=True)  # runs as it is
        return
    with pytest.raises(SpecError) as caught:
        compile_spec(str(path), profile, resolver=resolve, runnable=True)
    got = {(issue.path.split(".")[1], issue.message.split(":")[0]): str(issue.loc) for issue in caught.value.issues}
    assert got == refused
    lines = Path(path).read_text().splitlines()
    for loc in got.values():  # each refusal points into the spec file, at a line that exists
        file, line, _ = loc.rsplit(":", 2)
        assert file == str(path) and 1 <= int(line) <= len(lines)


@pytest.mark.parametrize("path", [ROOT / "specs/quickstart.yaml", ROOT / "specs/quickstart_preference.yaml",
                                  ROOT / "specs/toy2d.yaml", ROOT / "examples/custom_stage/spec.yaml"])
def test_the_runnable_shipped_specs_resolve_every_op(path):
    plan = compile_spec(str(path), resolver=resolve, runnable=True)
    assert plan.resolved and all(op.missing is None for s in plan.stages for op in s.ops)
