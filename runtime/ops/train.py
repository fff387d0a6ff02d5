"""Op `train`: the stage's objective on the shared training loop."""
from __future__ import annotations

from pathlib import Path

import torch

from ..train.checkpoint import capture_rng, restore_rng
from ...compiler import Issue, Location, SpecError
from ..train.loop import BaseChanged, LoopConfig, LoopHooks, Trainer, uses_bf16
from ..train.speed import prepare_denoiser
from . import op, spec_dir
from .context import StageContext
from .data import log_final_report
from .autoencoder import reconstruction_grid
from .sample import sample_grid


@op("train")
def train(ctx: StageContext, params: dict) -> None:
    ctx.trainer = build_trainer(ctx, params)
    if ctx.dist.main and ctx.stage.train.precision == "bf16" and ctx.device.type == "cpu" and not native_bf16():
        print(f"[{ctx.label}] warning: train.precision bf16 on a CPU without native bf16 (AVX512-BF16, AMX) is "
              "emulated and slower than fp32: set train.precision: fp32 on this machine", flush=True)
    try:
        ctx.trainer.run()
    except BaseChanged as exc:  # a frozen start or reference changed under an unfinished stage: say which
        raise SpecError([Issue(Location.parse(ctx.stage_plan.loc), f"stages.{ctx.stage.name}.{exc.field}",
                               f"{exc}; start it afresh with --fresh")]) from None
    if ctx.trainer.shards is not None:  # the later ops (samples, evaluation, export) take ordinary modules
        plain = ctx.trainer.unshard()
        if ctx.bundle is None:
            ctx.autoencoder = plain["vae"]
        else:
            ctx.bundle.denoiser = plain["denoiser"]
            ctx.bundle.text_encoder = plain.get("text_encoder", ctx.bundle.text_encoder)
    for role, shards in ctx.frozen_shards.items():  # a distillation report samples the teacher on rank 0
        for name, module in shards.plain().items():
            setattr(getattr(ctx, role), name, module.to(ctx.device))
    ctx.frozen_shards = {}
    if ctx.gold is not None:
        keep_best_by_gold(ctx)
    if ctx.dist.main:
        log_final_report(ctx)


def context_before_train(plan, stage_plan, device: torch.device) -> tuple[StageContext, dict]:
    """The stage's context after every op before `train` has run, and the train op's params: build_trainer on
    them makes the trainer `flowspec run` would train with (benchmarks and tests drive it step by step)."""
    from . import OPS

    ctx = StageContext(stage=plan.spec_stage(stage_plan.name), seed=stage_plan.seed, device=device, plan=plan,
                       stage_plan=stage_plan, run_dir=Path(stage_plan.run_dir))
    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    for node in stage_plan.ops:
        if node.op == "train":
            return ctx, node.params
        OPS[node.op].run(ctx, node.params)
    raise ValueError(f"stage {stage_plan.name} has no train op")


def build_trainer(ctx: StageContext, params: dict) -> Trainer:
    """The stage's objective on the shared loop, with its hooks (samples, cache flushes, gold, wandb) and the
    denoiser prepared for speed (runtime/train/speed.py); benchmarks drive it step by step."""
    from ..objectives import objective_class

    cls = objective_class(params["objective"], spec_dir(ctx.plan))
    options = cls.Options.model_validate(ctx.stage.objective_options() or {}) if cls.Options is not None else None
    objective = cls(ctx, options)
    draw = reconstruction_grid if ctx.autoencoder is not None else sample_grid  # an autoencoder's: reconstructions
    hooks = LoopHooks(on_samples=isolated(lambda step: draw(ctx, step)),
                      on_checkpoint=[lambda step: [c.flush() for c in ctx.caches]])
    if ctx.gold is not None:
        hooks.on_resume.append(ctx.gold.resume_at)
        hooks.should_finish = ctx.gold.should_finish
    if ctx.dist.main:
        ctx.wandb = start_wandb(ctx, hooks)
    if ctx.bundle is not None:  # an autoencoder stage trains its objective's VAE alone
        prepare_denoiser(ctx)
    modules = {**(ctx.bundle.trainable_modules() if ctx.bundle is not None else {}), **objective.modules()}
    trainer = Trainer(loop_config(ctx), modules, objective, ctx.stage.train, ctx.stage.optimizer, hooks, ctx.dist,
                      ctx.stop_requested)
    if trainer.shards is not None:
        shard_frozen_copies(ctx, uses_bf16(trainer.config))
    if ctx.stage.train.offload_frozen:
        offload_frozen(ctx, sharded=trainer.shards is not None)
    return trainer


def shard_frozen_copies(ctx: StageContext, bf16: bool) -> None:
    """A reference or teacher beside the sharded model is sharded too (in place: the objective holds the same
    modules), its shards in CPU memory under train.offload_frozen; frozen, it has no optimizer state."""
    from ..train.sharding import Shards

    offload = ctx.stage.train.offload_frozen
    for role in ("reference", "teacher"):
        bundle = getattr(ctx, role, None)
        if bundle is None:
            continue
        ctx.frozen_shards[role] = Shards(bundle.trainable_modules(), ctx.device, ctx.dist.world, bf16, offload)
        if ctx.dist.main:
            print(f"[{ctx.label}] {role}: sharded over {ctx.dist.world} processes"
                  + (", its shards in CPU memory" if offload else ""), flush=True)


def offload_frozen(ctx: StageContext, sharded: bool) -> None:
    """train.offload_frozen: the frozen encoders (a pretrained text encoder, the VAE; a reference or teacher
    loaded from elsewhere has its own) and, when not sharded (fsdp offloads their shards), the reference or
    teacher stay in CPU memory, on the device only while they run."""
    from ..models.latent import VAECodec
    from ..models.offload import offload_calls
    from ..models.text import PretrainedTextEncoder

    moved: dict[int, str] = {}
    copies = [(role, getattr(ctx, role)) for role in ("reference", "teacher") if getattr(ctx, role) is not None]
    for role, bundle in [("model", ctx.bundle), *copies]:
        whose = "the " if role == "model" else f"the {role}'s "
        encoder, codec = bundle.text_encoder, bundle.codec
        if isinstance(encoder, PretrainedTextEncoder) and id(encoder) not in moved:
            moved[id(encoder)] = whose + "text encoder"
            offload_calls(encoder, ctx.device, methods=("encode",))
        if isinstance(codec, VAECodec) and id(codec) not in moved:
            moved[id(codec)] = whose + "VAE"
            offload_calls(codec.vae, ctx.device, methods=("encode", "decode"))
        if role != "model" and not sharded:  # a frozen copy: its denoiser (and its copy of a trained text encoder)
            moved[id(bundle.denoiser)] = f"the {role}"
            offload_calls(bundle.denoiser, ctx.device, methods=("velocity",))
            if bundle.text_encoder is not None and id(bundle.text_encoder) not in moved:
                moved[id(bundle.text_encoder)] = whose + "text encoder"
                offload_calls(bundle.text_encoder, ctx.device)
    if ctx.dist.main and moved:
        print(f"[{ctx.label}] offload_frozen: {', '.join(moved.values())} in CPU memory, on the device only while "
              "they run", flush=True)


def keep_best_by_gold(ctx: StageContext) -> None:
    """Under stop_when_gold_drops, the best evaluation's weights are what the stage samples, evaluates and
    exports (they are export weights already: the EMA is set aside)."""
    gold = ctx.gold
    ctx.results["gold"] = {"reward": ctx.stage.gold.reward.kind, "best": gold.best,
                           "finished_early_at": ctx.trainer.finished_early}
    if ctx.stage.gold.stop_when_gold_drops is None or gold.best is None:
        return
    ctx.dist.barrier()  # the main process wrote the best weights
    step = gold.restore_best()
    ctx.trainer.ema = None
    if ctx.dist.main:
        print(f"[{ctx.label}] exporting the weights of step {step}, the best by gold "
              f"({gold.best['gold']:.4g})", flush=True)


def native_bf16() -> bool:
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def loop_config(ctx: StageContext) -> LoopConfig:
    train = ctx.stage.train
    return LoopConfig(steps=ctx.stage.steps, accumulation=ctx.accumulation, seed=ctx.seed, run_dir=ctx.run_dir,
                      label=ctx.label, device=ctx.device, precision=train.precision, log_every=train.log_every,
                      checkpoint_every=train.checkpoint.every, checkpoint_minutes=train.checkpoint.every_minutes,
                      checkpoint_keep=train.checkpoint.keep, samples_every=train.samples.every,
                      max_grad_norm=train.max_grad_norm, frozen_base=ctx.base_hash,
                      frozen_reference=ctx.reference_hash, frozen_teacher=ctx.teacher_hash)


def start_wandb(ctx: StageContext, hooks: LoopHooks):
    tracking = ctx.spec.tracking
    if tracking.kind != "wandb":
        return None
    from ..executors.stage import identity
    from ..train.logs import WandbLog

    log = WandbLog(tracking, ctx.run_dir, name=f"{ctx.spec.name}/{ctx.stage.name}", run_id=ctx.stage_plan.hash[:16],
                   config=identity(ctx.plan, ctx.stage_plan))
    hooks.on_log.append(lambda record: log.log(record, record["step"]))
    return log


def isolated(fn):
    """Run `fn` without disturbing any RNG the training loop depends on (exact resume)."""
    def wrapped(*args):
        state = capture_rng()
        try:
            return fn(*args)
        finally:
            restore_rng(state)
    return wrapped
