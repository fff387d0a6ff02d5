"""Pass `check`: semantic checks on the validated spec, before anything heavy is built.

Each check is a function spec -> findings, registered in CHECKS in the order they run. A finding
names the key path it is about, so it is reported at the line where that key was written.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Literal

from ..schemas import Spec
from .errors import did_you_mean, one_of


@dataclass(frozen=True)
class Finding:
    path: tuple
    message: str
    severity: Literal["error", "warning"] = "error"


Check = Callable[[Spec], Iterator[Finding]]
CHECKS: list[Check] = []


def check(fn: Check) -> Check:
    CHECKS.append(fn)
    return fn


def run_checks(spec: Spec) -> list[Finding]:
    return [finding for fn in CHECKS for finding in fn(spec)]


@check
def stage_graph(spec: Spec) -> Iterator[Finding]:
    names = [s.name for s in spec.stages]
    for i, stage in enumerate(spec.stages):
        if stage.name in names[:i]:
            yield Finding(("stages", i, "name"), f"duplicate stage name '{stage.name}' (also stages.{names.index(stage.name)})")
            continue
        for field, ref in stage.written_refs().items():
            if "/" in ref:
                continue
            path = ("stages", i, field)
            if ref == stage.name:
                yield Finding(path, f"stage '{stage.name}' cannot read itself (that would be a cycle)")
            elif ref not in names:
                yield Finding(path, f"unknown stage '{ref}'{did_you_mean(ref, names)} (stages: {one_of(names)});"
                              " a local path needs a '/', e.g. ./weights")
            elif names.index(ref) > i:
                yield Finding(path, f"stage '{ref}' runs after '{stage.name}': stages run in list order, move it earlier")
        if stage.needs_start and stage.from_ is None and spec.model.init.path is None:
            yield Finding(("stages", i, "kind"), f"a {stage.kind} stage refines trained weights: set `from:` to an "
                          "earlier stage or a local path (or model.init.path)")


@check
def stage_kinds(spec: Spec) -> Iterator[Finding]:
    """Each kind's own checks, declared beside its schema class (schemas/stages/)."""
    for i, stage in enumerate(spec.stages):
        for note in stage.findings(spec):
            yield Finding(("stages", i, *note.path), note.message, note.severity)


@check
def batch_arithmetic(spec: Spec) -> Iterator[Finding]:
    from ..schemas.train import BatchSplitError

    for i, stage in enumerate(spec.stages):
        executor = stage.executor
        try:
            stage.train.split(executor.num_devices())
        except BatchSplitError as exc:
            origin = ""
            if executor.kind == "slurm" and executor.num_devices() > 1:  # where the process count comes from
                origin = (f" (executor: {executor.nodes} node(s) x {executor.tasks_per_node()} task(s), one per "
                          "GPU of gpus_per_node)")
            yield Finding(("stages", i, "train", exc.key), str(exc) + origin)


# The objectives train.sharding fsdp runs under: every built-in one (a custom objective has not been checked on
# shards: snapshots of its own, direct calls around a module's forward).
SHARDED_OBJECTIVES = ("flow_matching", "dreambooth", "diffusion_dpo", "reflow", "progressive_distill",
                      "consistency_distill", "reward_feedback", "flow_grpo", "adversarial_distill",
                      "distribution_matching")

@check
def sharding(spec: Spec) -> Iterator[Finding]:
    for i, stage in enumerate(spec.stages):
        train = stage.train
        if train.offload_frozen and stage.trains != "vae":  # the autoencoder kind says why itself
            yield from offload(stage, spec.model, i)
        if train.sharding != "fsdp":
            continue
        where = ("stages", i, "train", "sharding")
        if stage.objective_name() not in SHARDED_OBJECTIVES:
            yield Finding(where, f"sharding fsdp runs the built-in stage kinds, not yet the custom objective "
                          f"{stage.objective_name()}: use sharding: none" if stage.kind == "custom" else
                          f"sharding fsdp does not run {stage.kind} stages yet: use sharding: none")
        elif train.compile:
            yield Finding(where, "sharding fsdp with train.compile is not supported yet: set one of them off")


def frozen_encoders(model) -> list[str]:
    """The model's frozen encoders that offload_frozen keeps in CPU memory (a builtin text encoder trains)."""
    text = None if model.kind == "dit" and model.conditioning == "class" else model.text_encoder
    found = ["a pretrained text encoder"] if text is not None and text.kind != "builtin" else []
    return found + (["the VAE"] if model.latent.kind == "vae" else [])


def offload(stage, model, i: int) -> Iterator[Finding]:
    if not stage.holds_frozen_copy() and not frozen_encoders(model):
        yield Finding(("stages", i, "train", "offload_frozen"),
                      f"offload_frozen: the {stage.kind} stage holds no frozen module to offload: no frozen copy of "
                      "the model" + (" (under lora its reference is the start with the adapter switched off)"
                                     if stage.lora is not None and "reference" in stage.refs() else "")
                      + ", no pretrained text encoder, no VAE (pixel space); remove it")


@check
def schedules(spec: Spec) -> Iterator[Finding]:
    for i, stage in enumerate(spec.stages):
        warmup = stage.optimizer.schedule.warmup_steps
        if warmup >= stage.steps:
            yield Finding(("stages", i, "optimizer", "schedule", "warmup_steps"),
                          f"warm-up of {warmup} steps does not end within the stage's {stage.steps} steps")
        ema = stage.train.ema
        if ema is not None and ema.every > stage.steps:
            yield Finding(("stages", i, "train", "ema", "every"), f"the EMA would never update in {stage.steps} steps",
                          "warning")
        samples = stage.train.samples
        if samples.cfg_scale not in (0.0, 1.0) and stage.train.cfg_dropout == 0 and spec.model.kind != "mlp":
            yield Finding(("stages", i, "train", "cfg_dropout"), f"samples use cfg_scale {samples.cfg_scale} but the "
                          "model never sees an empty condition (cfg_dropout 0): guidance will extrapolate garbage",
                          "warning")


@check
def slurm_limits(spec: Spec) -> Iterator[Finding]:
    for i, stage in enumerate(spec.stages):
        ex = stage.executor
        if ex.kind != "slurm":
            continue
        path = ("stages", i, "executor")
        limit_s = ex.timeout_min * 60
        if ex.signal_delay_s >= limit_s:
            yield Finding((*path, "signal_delay_s"), f"the checkpoint signal ({ex.signal_delay_s} s before the end) "
                          f"would come before the job starts (time limit {ex.timeout_min} min)")
        minutes = stage.train.checkpoint.every_minutes
        if minutes is not None and minutes * 60 >= limit_s - ex.signal_delay_s:
            yield Finding(("stages", i, "train", "checkpoint", "every_minutes"), f"a checkpoint every {minutes} min "
                          f"never lands inside the {ex.timeout_min} min time limit; the signal-time checkpoint is the only one")


@check
def prompt_templates(spec: Spec) -> Iterator[Finding]:
    for i, stage in enumerate(spec.stages):
        enhancer = stage.prompt_enhancer
        if enhancer is None or enhancer.kind != "template":
            continue
        import jinja2  # only specs with templates pay for it

        try:
            jinja2.Environment(undefined=jinja2.StrictUndefined).parse(enhancer.template)
        except jinja2.TemplateSyntaxError as exc:
            yield Finding(("stages", i, "prompt_enhancer", "template"), f"jinja2 template: {exc.message} (line {exc.lineno})")
        except RecursionError:
            yield Finding(("stages", i, "prompt_enhancer", "template"), "jinja2 template: nested too deeply to parse")
