"""Parameter counts, training FLOPs, peak memory and GPU-hours of each stage, before any weight exists.

Everything is measured on the meta device: the exact model is built without memory, one forward
runs under torch's FlopCounterMode, and the tensors autograd saves for the backward are summed to
give the activation memory per sample.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch.utils.checkpoint import checkpoint
from torch.utils.flop_counter import FlopCounterMode

from ..compiler.checks import SHARDED_OBJECTIVES
from ..compiler.plan import Estimate, Plan, StagePlan
from ..schemas.hardware import ACCELERATORS
from .models.build import build_denoiser, example_inputs, frozen_encoder_params
from .train.sharding import blocks
from .train.speed import regions
from .data.sources import DataError
from .objectives import cost_of
from .ops.context import data_error
from .ops.data import checked_classes

GIB = 2**30
ADAM_BYTES = 8  # two fp32 moments per trainable parameter
TEXT_TOKENS = {"builtin": 32, "minilm": 64, "clip": 77, "t5": 128}


@dataclasses.dataclass(frozen=True)
class Region:
    """A region of the denoiser (runtime.train.speed.regions) in one forward of one sample, in bytes."""
    saved: float  # saved for the backward inside it
    checkpointed: float  # saved with its blocks checkpointed (what the checkpoints keep for the recomputation too)
    start: float  # saved by the forward before it starts

    def saving(self) -> float:
        return self.saved - self.checkpointed


@dataclasses.dataclass(frozen=True)
class ForwardCost:
    flops: float  # one forward, one sample
    saved_bytes: float  # activations kept for the backward, one sample, fp32
    regions: tuple[Region, ...] = ()

    def recomputed(self, count: int) -> list[int]:
        """The `count` regions to checkpoint: those saving most, the earliest run first among equals (the backward
        recomputes those last, with least else alive)."""
        order = sorted(range(len(self.regions)), key=lambda i: (-self.regions[i].saving(), self.regions[i].start))
        return order[:count]

    def kept_bytes(self, count: int) -> float:
        """Activations per sample at the backward's peak when `count` regions checkpoint their blocks: the larger of
        what is kept when the backward starts and, for each recomputed region, what was kept before it plus its
        whole activations again (what was saved after it is freed by then)."""
        chosen = [self.regions[i] for i in self.recomputed(count)]
        peaks = [self.saved_bytes - sum(r.saving() for r in chosen)]
        for region in chosen:
            before = region.start - sum(r.saving() for r in chosen if r.start < region.start)
            peaks.append(before + region.checkpointed + region.saved)
        return max(peaks)


@dataclasses.dataclass(frozen=True)
class Footprint:
    """What a stage's memory per device is made of, before the choices of sharding and checkpointing."""
    total: int  # parameters
    trainable: int
    activations: ForwardCost  # of one sample at the curriculum's most costly resolution
    devices: int
    largest_block: int = 0  # parameters of the largest block fsdp shards on its own
    unblocked: int = 0  # parameters outside those blocks (the root's: whole through the step under fsdp)
    frozen_fields: tuple[str, ...] = ()  # the stage's frozen copies of the model
    trained_copies: int = 0  # a second trained model (DMD's fake score)
    encoders: tuple[int, ...] = ()  # parameters of each frozen encoder (a pretrained text encoder, the VAE)


class _Measured:
    """The model built once per plan, and its forward cost per resolution (shared by all stages)."""

    def __init__(self, model_spec):
        self.model_spec = model_spec
        self.model = build_denoiser(model_spec, device="meta")
        self.total = count_params(self.model)
        self.region_names = [name for name, _ in regions(self.model)]
        sizes = [count_params(block) for block in blocks(self.model)]
        self.largest_block, self.unblocked = max(sizes, default=0), self.total - sum(sizes)
        self.text_params = _trained_text_encoder_params(model_spec)
        self.encoders = frozen_encoder_params(model_spec)
        self.factor = model_spec.latent.factor() if model_spec.latent.kind == "vae" else 1
        self._costs: dict[int, ForwardCost] = {}

    def cost(self, resolution: int) -> ForwardCost:
        if self.model_spec.kind == "mlp":
            resolution = 1
        if resolution not in self._costs:
            self._costs[resolution] = forward_cost(self.model, self.model_spec, resolution, self.factor)
        return self._costs[resolution]


def _trained_text_encoder_params(model_spec) -> int:
    """The builtin text encoder trains with the denoiser, so its parameters count as trainable."""
    encoder = model_spec.text_encoder
    if encoder is None or encoder.kind != "builtin" or (model_spec.kind == "dit" and model_spec.conditioning == "class"):
        return 0
    from .models.text import build_text_encoder

    with torch.device("meta"):
        return count_params(build_text_encoder(model_spec))


def estimate_plan(plan: Plan) -> Plan:
    measured = _Measured(plan.spec.model)
    for stage_plan in plan.stages:
        estimate = estimate_stage(plan, stage_plan, measured)
        try:
            report = tuple(data_report(plan, stage_plan))
        except DataError as exc:  # found before any training: one positioned line, no traceback
            raise data_error(stage_plan, str(exc)) from None
        told = check_instances(plan, stage_plan)
        if told:
            estimate = dataclasses.replace(estimate, notes=(*estimate.notes, told))
        if plan.spec.model.class_count() is not None:  # an image folder's classes are known once it is read
            checked_classes(plan.spec_stage(stage_plan.name), stage_plan, plan.spec.model.class_count())
        plan = plan.replace_stage(dataclasses.replace(stage_plan, estimate=estimate, data_report=report))
    return plan


def with_estimates(plan: Plan) -> Plan:
    """The plan with each stage still to run estimated (a stage already estimated keeps its estimate): what a
    run checks its size against, and writes into the stage folder for its report."""
    from ..compiler.lower import cache_status

    measured = None
    for stage_plan in plan.stages:
        if stage_plan.estimate is None and cache_status(stage_plan.run_dir) != "hit":
            measured = measured or _Measured(plan.spec.model)
            plan = plan.replace_stage(dataclasses.replace(stage_plan, estimate=estimate_stage(plan, stage_plan,
                                                                                              measured)))
    return plan


def data_report(plan: Plan, stage_plan: StagePlan) -> list[dict]:
    """Images per aspect bucket, repeats and drops of every curriculum phase, as training will see them."""
    from .data.stream import BatchStream

    spec = plan.spec
    stage = plan.spec_stage(stage_plan.name)
    if stage.data.source.kind in ("toy2d", "webdataset"):  # streamed shards are counted while they are read
        return []
    devices, micro, accumulation = batch_split(stage)
    return BatchStream(stage.data, stage_plan.seed, micro, accumulation, pixel_multiple(spec.model),
                       world=devices, spec_dir=str(Path(plan.source).resolve().parent)).report()


def batch_split(stage) -> tuple[int, int, int]:
    """(processes, micro-batch, accumulation steps) of a stage on the devices its executor declares."""
    devices = stage.executor.num_devices()
    micro = stage.train.micro_batch or stage.train.global_batch // devices
    return devices, micro, stage.train.global_batch // (micro * devices)


def pixel_multiple(model_spec) -> int:
    """What image sides must divide by: the autoencoder's factor times the patch size."""
    latent = model_spec.latent
    return (latent.factor() if latent.kind == "vae" else 1) * model_spec.patch_factor()


def check_instances(plan: Plan, stage_plan: StagePlan) -> str | None:
    """A DreamBooth stage's subject images, read as its run will read them (positioned errors); what the
    plan says of them."""
    stage = plan.spec_stage(stage_plan.name)
    if stage.kind != "dreambooth":
        return None
    from .ops.dreambooth import described, instance_stream

    devices, micro, accumulation = batch_split(stage)
    _, own, found = instance_stream(stage, stage_plan, stage_plan.seed, micro, accumulation,
                                    pixel_multiple(plan.spec.model), world=devices)
    return described(stage, own, found)


def count_params(module: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def lora_params(model: torch.nn.Module, lora) -> int:
    """Adapter parameters peft would add, counted by injecting the adapter into the meta model."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=lora.rank, lora_alpha=lora.resolved_alpha(), lora_dropout=lora.dropout,
                        target_modules=lora.targets)
    adapted = inject_adapter_in_model(config, model)
    return sum(p.numel() for name, p in adapted.named_parameters() if "lora_" in name)


def forward_cost(model: torch.nn.Module, model_spec, resolution: int, factor: int, device: str = "meta") -> ForwardCost:
    side = max(resolution // factor, 1)
    text_tokens = TEXT_TOKENS.get(getattr(model_spec.text_encoder, "kind", None), 0)
    text_tokens = getattr(model_spec.text_encoder, "max_tokens", text_tokens)
    inputs = example_inputs(model_spec, 1, side, side, text_tokens, device=device)
    run = (lambda: model(inputs["x"], inputs["t"])) if model_spec.kind == "mlp" else (lambda: model(**inputs))
    with FlopCounterMode(display=False) as counter:
        saved, starts = saved_by_region(model, run)
    if not regions(model):
        return ForwardCost(float(counter.get_total_flops()), float(sum(saved)))
    kept, _ = saved_by_region(model, run, checkpointed=True)
    return ForwardCost(float(counter.get_total_flops()), float(sum(saved)),
                       tuple(Region(*values) for values in zip(saved, kept, starts)))


def saved_by_region(model: torch.nn.Module, run, checkpointed: bool = False):
    """Bytes autograd saves for the backward during `run()` inside each of the model's regions (then outside them:
    the last entry), with every block checkpointed or none; what was saved before each region started."""
    params = {id(p) for p in model.parameters()}
    units = [block for _, block in regions(model)]
    owner = {id(m): i for i, unit in enumerate(units) for m in unit.modules()}
    saved, starts = [0.0] * (len(units) + 1), [0.0] * len(units)
    inside = [len(units)]

    def pack(tensor):
        base = tensor._base if tensor._base is not None else tensor
        if id(base) not in params and id(tensor) not in params:
            saved[inside[0]] += tensor.numel() * tensor.element_size()
        return tensor

    def recompute(block, *args, **kwargs):  # what a checkpoint keeps counts in its block's region
        outer, inside[0] = inside[0], owner[id(block)]
        try:
            return checkpoint(block.__call__, *args, use_reentrant=False, preserve_rng_state=False, **kwargs)
        finally:
            inside[0] = outer

    def enter(i):
        def hook(*_):  # returns None: the block's inputs stay as they are
            starts[i], inside[0] = sum(saved), i
        return hook

    def leave(*_):
        inside[0] = len(units)

    hooks = [h for i, unit in enumerate(units) for h in (unit.register_forward_pre_hook(enter(i)),
                                                         unit.register_forward_hook(leave))]
    if checkpointed:
        model.enable_gradient_checkpointing(recompute)
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            run()
    finally:
        for hook in hooks:
            hook.remove()
        if checkpointed:
            model.disable_gradient_checkpointing()
    return saved, starts


def estimate_stage(plan: Plan, stage_plan: StagePlan, measured: _Measured | None = None) -> Estimate:
    spec = plan.spec
    stage = next(s for s in spec.stages if s.name == stage_plan.name)
    if stage.trains == "vae":
        from .estimate_autoencoder import autoencoder_estimate

        return autoencoder_estimate(spec, stage)
    measured = measured or _Measured(spec.model)
    total = measured.total + measured.text_params
    # peft mutates the model it adapts, so LoRA is counted on a fresh meta build; under LoRA only the
    # adapters train (the builtin text encoder is frozen too).
    trainable = lora_params(build_denoiser(spec.model, device="meta"), stage.lora) if stage.lora else total
    notes: list[str] = []
    cost = cost_of(stage, str(Path(plan.source).resolve().parent))
    flops = 0.0
    phases = stage.data.curriculum
    for j, phase in enumerate(phases):
        end = phases[j + 1].at_step if j + 1 < len(phases) else stage.steps
        per_sample = measured.cost(phase.resolution).flops * cost.forwards_per_sample
        flops += max(end - phase.at_step, 0) * stage.train.global_batch * per_sample
    flops += cost.one_off_forwards * measured.cost(phases[0].resolution).flops
    if cost.teacher_forwards or "teacher" in cost.frozen_copies:
        notes.append(teacher_note(stage, cost, flops, measured))
    executor, devices = stage.executor, stage.executor.num_devices()
    accel = ACCELERATORS[executor.gpu]
    footprint = footprint_of(stage, measured, trainable, cost)
    sharded = stage.train.sharding == "fsdp"
    checkpointed = checkpointing(stage, spec.model, footprint, sharded, notes)
    memory = peak_memory(stage, footprint, notes, sharded, checkpointed)
    if devices > 1 and shardable(stage):
        notes.append(sharding_note(stage, footprint, checkpointed, accel))
    if memory > accel.memory_gib:
        notes.append(f"estimated {memory:.1f} GiB per device exceeds the {accel.memory_gib:.0f} GiB of a {executor.gpu}: "
                     f"{memory_remedies(spec.model, stage)}")
    seconds = flops / (accel.peak_tflops * 1e12 * executor.mfu) / devices
    step_seconds = seconds / stage.steps
    _check_time_limit(stage, step_seconds, notes)
    if measured.text_params:
        notes.append(f"parameters include the builtin text encoder's {measured.text_params:,}")
    if measured.encoders:
        notes.append("frozen " + ", ".join(f"{name}: {n:,} parameters" for name, n in measured.encoders.items())
                     + (" (in CPU memory: train.offload_frozen)" if stage.train.offload_frozen else ""))
    return Estimate(params_total=total, params_trainable=trainable, train_flops=flops, memory_gib=memory,
                    gpu_hours=seconds * devices / 3600, accelerator=executor.gpu, devices=devices,
                    step_seconds=step_seconds, params_text_encoder=measured.text_params, notes=tuple(notes),
                    checkpointed=tuple(measured.region_names[i] for i in footprint.activations.recomputed(checkpointed)))


def footprint_of(stage, measured: _Measured, trainable: int, cost) -> Footprint:
    costliest = max((measured.cost(p.resolution) for p in stage.data.curriculum), key=lambda c: c.saved_bytes)
    return Footprint(measured.total + measured.text_params, trainable, costliest, stage.executor.num_devices(),
                     measured.largest_block, measured.unblocked + measured.text_params, cost.frozen_copies,
                     cost.trained_copies, tuple(measured.encoders.values()))


def teacher_note(stage, cost, flops: float, measured) -> str:
    """The frozen teacher's part of the stage's FLOPs: its forwards in every step, and the one-off ones."""
    phases = stage.data.curriculum
    per_step = 0.0
    for j, phase in enumerate(phases):
        end = phases[j + 1].at_step if j + 1 < len(phases) else stage.steps
        per_step += max(end - phase.at_step, 0) * stage.train.global_batch * measured.cost(phase.resolution).flops
    teacher = per_step * cost.teacher_forwards + cost.one_off_forwards * measured.cost(phases[0].resolution).flops
    return (f"teacher: {cost.teacher_forwards:g} of {cost.forwards_per_sample:g} forwards per sample"
            + (f", {cost.one_off_forwards:,.0f} one-off" if cost.one_off_forwards else "")
            + f": {teacher:.3g} FLOPs, {100 * teacher / flops if flops else 0:.0f}% of the stage's")


def memory_remedies(model_spec, stage) -> str:
    """What would lower the peak, leaving out what the spec already does."""
    train, devices = stage.train, stage.executor.num_devices()
    remedies = []
    if (train.micro_batch or train.global_batch // devices) > 1:
        remedies.append("lower train.micro_batch")
    if model_spec.gradient_checkpointing is False:
        remedies.append("enable model.gradient_checkpointing")
    if train.precision == "fp32" and stage.executor.gpu != "cpu":
        remedies.append("train in bf16 (train.precision)")
    if devices > 1 and train.sharding == "none" and shardable(stage):
        remedies.append("shard it (train.sharding: fsdp)")
    if stage.lora is None:
        remedies.append("use lora")
    if not remedies:
        return "it does not fit even at micro-batch 1 with checkpointing and LoRA: declare a device with more memory"
    return ", ".join(remedies[:-1]) + " or " + remedies[-1] if len(remedies) > 1 else remedies[0]


def shardable(stage) -> bool:
    return stage.objective_name() in SHARDED_OBJECTIVES and not stage.train.compile


def sharding_note(stage, footprint: Footprint, checkpointed: int, accel) -> str:
    """Memory per device under each train.sharding choice, and which fit the declared accelerator."""
    memory = {choice: peak_memory(stage, footprint, [], choice == "fsdp", checkpointed) for choice in ("none", "fsdp")}
    fits = [choice for choice, gib in memory.items() if gib <= accel.memory_gib]
    verdict = "both fit" if len(fits) == 2 else f"{fits[0]} fits" if fits else "neither fits"
    return (f"memory per device by train.sharding: none {memory['none']:.1f} GiB, fsdp {memory['fsdp']:.1f} GiB "
            f"over {footprint.devices} devices; {verdict} the {accel.memory_gib:.0f} GiB of a {stage.executor.gpu}")


def checkpointing(stage, model_spec, footprint: Footprint, sharded: bool, notes) -> int:
    """How many of the denoiser's regions recompute their activations: none, all, or under `auto` the fewest
    (those saving most first) that bring the estimate within the declared accelerator's memory."""
    setting, count = model_spec.gradient_checkpointing, len(footprint.activations.regions)
    if setting != "auto":
        return count if setting else 0
    limit = ACCELERATORS[stage.executor.gpu].memory_gib
    fitting = (k for k in range(count + 1) if peak_memory(stage, footprint, [], sharded, k) <= limit)
    chosen = next(fitting, count)
    gib = peak_memory(stage, footprint, [], sharded, chosen)
    notes.append(f"model.gradient_checkpointing auto: {chosen} of {count} blocks recompute their activations, "
                 f"{gib:.1f} GiB per device" + (f" (the fewest within the {limit:.0f} GiB of a {stage.executor.gpu})"
                                                if gib <= limit else " (all of them, and it still does not fit)"))
    return chosen


def peak_memory(stage, footprint: Footprint, notes, sharded: bool = False, checkpointed: int = 0) -> float:
    """GiB per device: weights, gradients, optimizer and EMA states (a 1/devices share under fsdp), frozen and
    trained copies, and the activations of one micro-batch with `checkpointed` regions recomputed."""
    train, f = stage.train, footprint
    micro = train.micro_batch or train.global_batch // f.devices
    bf16 = train.precision == "bf16" or (train.precision == "auto" and stage.executor.gpu != "cpu")
    activations = f.activations.kept_bytes(checkpointed) * micro * (0.5 if bf16 else 1.0)
    states = 4 * f.total + (4 + ADAM_BYTES) * f.trainable + (4 * f.trainable if train.ema else 0)
    if sharded:  # a 1/devices share of all that; whole, in the compute precision: the root's own parameters
        # through the step, and the block computing with the next one (all-gathered ahead)
        states = states / f.devices + (f.unblocked + 2 * f.largest_block) * (2 if bf16 else 4)
    states += frozen_bytes(stage, f, sharded, bf16, notes)
    states += f.trained_copies * (4 + ADAM_BYTES + 4) * f.total
    if f.trained_copies:
        notes.append(f"memory includes {f.trained_copies} trained copy of the model (with its optimizer state)")
    return (states + activations) * 1.1 / GIB  # 10% for the allocator and workspace


def frozen_bytes(stage, f: Footprint, sharded: bool, bf16: bool, notes) -> float:
    """The frozen encoders (fp32) and copies of the model (teacher / reference, in the compute precision) on the
    device. Under offload_frozen each is there only while it runs: the largest of them is counted once (sharded
    copies keep their shards in CPU memory and gather one block ahead, as the trained model)."""
    # A teacher or reference that is the starting point costs no copy under LoRA: disabling the adapter recovers it.
    refs = stage.refs()
    frozen_copies = sum(1 for n in f.frozen_fields if stage.lora is None or refs.get(n, stage.from_) != stage.from_)
    if frozen_copies:
        notes.append(f"memory includes {frozen_copies} frozen copy of the model (teacher/reference)")
    copy = (2 if bf16 else 4) * f.total
    encoders = [4 * n for n in f.encoders]
    gathered = (f.unblocked + 2 * f.largest_block) * (2 if bf16 else 4)  # a sharded copy's whole blocks
    if not stage.train.offload_frozen:
        return sum(encoders) + frozen_copies * ((copy / f.devices + gathered) if sharded else copy)
    if sharded:
        return max(encoders, default=0) + frozen_copies * gathered
    return max(encoders + [copy] * frozen_copies, default=0)


def _check_time_limit(stage, step_seconds: float, notes) -> None:
    executor = stage.executor
    if executor.kind != "slurm":
        return
    interval = stage.train.checkpoint.every * step_seconds
    usable = executor.timeout_min * 60 - executor.signal_delay_s
    if interval > usable:
        notes.append(f"a checkpoint every {stage.train.checkpoint.every} steps is ~{interval / 60:.0f} min, longer than "
                     f"the {executor.timeout_min} min time limit: only the signal-time checkpoint will save work")
