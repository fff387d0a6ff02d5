"""What a stage's ops share while the executor runs them, in plan order.

Each op reads what earlier ops left here and adds its own part: `load_model` the bundle, `data` the
batch stream, `vision_encoder` the REPA terms, `train` the trainer, `evaluate` results. Ops reach
the spec only through `stage` (the stage's frozen, fully resolved block) and `plan`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ...compiler import Issue, Location, SpecError
from ..distributed import SINGLE, Distributed


@dataclass
class StageContext:
    stage: Any  # the stage's spec block (schemas/stages/)
    seed: int
    device: torch.device
    plan: Any = None  # the compiled Plan (None in benchmarks that build a context by hand)
    stage_plan: Any = None
    dist: Distributed = SINGLE
    stop_requested: Callable[[], bool] = lambda: False
    run_dir: Path = Path(".")
    # filled by the ops
    bundle: Any = None  # load_model: runtime/models/bundle.py ModelBundle
    base: str | None = None  # load_model: the exported model folder the stage starts from (None: init or a backbone)
    base_hash: str | None = None  # attach_lora: the frozen base's fingerprint (runtime/models/lora.py)
    stream: Any = None  # data: the batch stream (runtime/data/stream.py)
    feed: Any = None  # data: what the objective reads batches from (the stream, or its prefetching loader)
    accumulation: int = 1
    instance_feed: Any = None  # instance_data: DreamBooth's subject batches, captioned with the instance prompt
    prior_images: Any = None  # generate_prior: DreamBooth's class images, (N, 3, H, W) in [-1, 1]
    gold: Any = None  # gold: the held-out evaluation watching the training (runtime/ops/gold.py)
    enhancer: Any = None  # enhance_prompts: the stage's prompt enhancer (runtime/enhance.py)
    reward: Any = None  # reward: the stage's reward Scorer (runtime/rewards)
    reference: Any = None  # load_reference: the frozen reference bundle (None: the start with LoRA switched off)
    reference_hash: str | None = None  # its fingerprint, pinned in every checkpoint
    teacher: Any = None  # load_teacher: the frozen teacher bundle (None: the start with LoRA switched off)
    teacher_hash: str | None = None  # its fingerprint, pinned in every checkpoint
    frozen_shards: dict = field(default_factory=dict)  # train under fsdp: {role: the sharded frozen copy}
    pairs: Any = None  # pairs: Diffusion-DPO's preference pairs (runtime/data/pairs.py)
    discriminator: Any = None  # discriminator: ADD's heads on a frozen feature network (runtime/models/discriminator.py)
    coupling: Any = None  # generate_pairs: reflow's (noise, teacher sample) pairs (runtime/data/coupling.py)
    classes: Any = None  # data: a class-conditional model's ClassNames (runtime/data/classes.py)
    repa: list = field(default_factory=list)  # vision_encoder: one RepaLoss per aux_losses entry
    caches: list = field(default_factory=list)  # content-keyed caches to flush at checkpoints
    trainer: Any = None  # train: runtime/train/loop.py Trainer
    autoencoder: Any = None  # load_autoencoder: the AutoencoderKL an autoencoder stage trains (no bundle then)
    wandb: Any = None
    results: dict = field(default_factory=dict)  # evaluate, data reports: go to results.json

    @property
    def spec(self):
        return self.plan.spec

    @property
    def label(self) -> str:
        return self.stage.name

    @property
    def toy(self) -> bool:
        return self.spec.model.kind == "mlp"

    def weights_for_export(self):
        """The EMA weights swapped in (samples, evaluation and export use them), else the trained ones; whole
        (during training with train.sharding fsdp, every rank enters)."""
        import contextlib

        return self.trainer.export_weights() if self.trainer is not None else contextlib.nullcontext()

    def log_image(self, key: str, path: Path, step: int) -> None:
        if self.wandb is not None:
            self.wandb.image(key, path, step)


def split_batch(stage, world: int, loc: str) -> tuple[int, int]:
    """(micro-batch, accumulation) for this run's `world` processes (schemas/train.py: Train.split)."""
    from ...schemas.train import BatchSplitError

    try:
        return stage.train.split(world)
    except BatchSplitError as exc:
        raise SpecError([Issue(Location.parse(loc), f"stages.{stage.name}.train.{exc.key}", str(exc))]) from None


def data_error(stage_plan, message: str) -> SpecError:
    """A problem with the user's data as a positioned error at the stage's `data` op (its data line)."""
    where = next((op.loc for op in stage_plan.ops if op.op == "data"), stage_plan.loc)
    return SpecError([Issue(Location.parse(where), f"stages.{stage_plan.name}.data", message)])
