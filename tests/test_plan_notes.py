"""Every note and warning `flowspec plan` prints, on a spec where it applies and on one where it does not:
its advice never suggests what the spec already does."""
import pytest

from flowspec.compiler import compile_spec
from flowspec.runtime.estimate import _Measured, estimate_stage, memory_remedies

SDXL, SMOKE = "specs/sdxl_like.yaml", "smoke"
_MEASURED: dict[str, _Measured] = {}


def notes(root, spec: str, profile: str | None, stage: str, *sets: str) -> list[str]:
    """The stage's estimate notes and the plan's warnings about it, as `plan` prints them."""
    plan = compile_spec(str(root / spec), profile, sets)
    key = plan.spec.model.model_dump_json()
    measured = _MEASURED.setdefault(key, _Measured(plan.spec.model))  # the meta build, once per model
    estimate = estimate_stage(plan, plan.stage(stage), measured)
    return [*estimate.notes, *(str(w) for w in plan.warnings if f"stages.{stage}." in str(w))]


def has(found: list[str], text: str) -> bool:
    return any(text in note for note in found)


# (what the note says, (spec, profile, stage, sets) where it applies, (...) where it does not)
A10G = "stages.sft.executor.gpu=a10g"  # 24 GiB: the 2.6B model's states alone do not fit
QUICK = "specs/quickstart.yaml"
AUTO = "model.gradient_checkpointing=auto"
MICRO8 = "stages.sft.train.micro_batch=8"  # twice the spec's: its activations no longer fit an H100


def both(spec, profile, stage, applies, absent):
    return (spec, profile, stage, applies), (spec, profile, stage, absent)


NOTES = [
    ("exceeds the 80 GiB of a h100", *both(SDXL, None, "sft", [MICRO8], [])),
    ("enable model.gradient_checkpointing", *both(SDXL, None, "sft", ["model.gradient_checkpointing=false"], [])),
    ("(all of them, and it still does not fit)",
     *both(SDXL, None, "sft", [AUTO, MICRO8], [AUTO])),
    ("model.gradient_checkpointing auto: 5 of 7 blocks", *both(SDXL, None, "sft", [AUTO], [])),
    ("lower train.micro_batch", *both(SDXL, None, "sft", [A10G], [A10G, "stages.sft.train.micro_batch=1"])),
    ("train in bf16 (train.precision)", *both(SDXL, None, "sft", ["stages.sft.train.precision=fp32"],
                                              ["stages.sft.train.precision=bf16"])),
    ("use lora", *both(SDXL, None, "sft", [A10G], [A10G, "stages.sft.lora={rank: 4}"])),
    ("longer than the 30 min time limit", *both(SDXL, None, "pretrain", ["executor.timeout_min=30",
                                                "train.checkpoint.every=100000"], ["executor.timeout_min=30"])),
    ("frozen copy of the model", *both(SDXL, SMOKE, "dpo", [], ["stages.dpo.lora={rank: 4}"])),
    ("frozen VAE", (SDXL, SMOKE, "sft", []), (QUICK, None, "finetune", [])),
    ("parameters include the builtin text encoder", (SDXL, SMOKE, "sft", []), ("specs/toy2d.yaml", None, "pretrain", [])),
    ("the EMA would never update", *both(SDXL, SMOKE, "pretrain", ["train.ema={decay: 0.9, every: 100}"], [])),
    ("never sees an empty condition", *both(SDXL, SMOKE, "pretrain", ["train.cfg_dropout=0"], [])),
    ("a `resolution` shift recomputes alpha", *both(SDXL, SMOKE, "pretrain", ["timesteps.shift={kind: fixed, alpha: 3}"],
     ["stages.pretrain.data.curriculum=[{at_step: 0, resolution: 32}]", "timesteps.shift={kind: fixed, alpha: 3}"])),
    ("mu is extrapolated", *both(SDXL, SMOKE, "pretrain", ["timesteps.shift={kind: dynamic, base_seq_len: 256}"],
                                 ["timesteps.shift={kind: dynamic, base_seq_len: 4, max_seq_len: 4096}"])),
    ("prior images would learn the subject", *both(SDXL, SMOKE, "subject_lora",
                                                   ["stages.subject_lora.prior.class_prompt=a photo of sks shape"], [])),
]


@pytest.mark.parametrize("text,applies,absent", NOTES, ids=[n[0] for n in NOTES])
def test_a_note_appears_where_it_applies_and_only_there(root, text, applies, absent):
    spec, profile, stage, sets = applies
    assert has(notes(root, spec, profile, stage, *sets), text)
    spec, profile, stage, sets = absent
    assert not has(notes(root, spec, profile, stage, *sets), text)


def test_the_headline_spec_is_not_told_to_enable_what_it_enables(root):
    """The report that started this: sft sets gradient checkpointing, and the memory note asked for it."""
    found = notes(root, SDXL, None, "sft", MICRO8)
    assert has(found, "exceeds the 80 GiB") and not has(found, "gradient_checkpointing")


def test_a_stage_that_does_all_it_can_is_told_to_declare_a_larger_device(root):
    sets = [A10G, "stages.sft.train.micro_batch=1", "stages.sft.lora={rank: 4}", "stages.sft.train.precision=bf16",
            "stages.sft.train.sharding=fsdp"]
    plan = compile_spec(str(root / SDXL), None, sets)
    stage = plan.spec_stage("sft")
    assert memory_remedies(plan.spec.model, stage).startswith("it does not fit even at micro-batch 1")
    plan = compile_spec(str(root / SDXL), None, [s for s in sets if "lora" not in s])
    assert memory_remedies(plan.spec.model, plan.spec_stage("sft")) == "use lora"
