"""The objective of a training stage, and what one of its steps costs.

An objective is the only kind-specific code a stage runs inside the shared loop (runtime/train/loop.py):
built once per stage from the stage's context (the model, its data, the frozen copies other ops
loaded), then called with (step, micro-batch) for the loss. Everything around it (accumulation,
clipping, EMA, checkpoints and exact resume, logging, data parallelism, SLURM preemption) is the loop's.

Each objective module registers its class under the objective's name, which is the name a stage
kind declares in its schema class (schemas/stages/). A kind whose objective has not landed yet
registers its cost model alone, so `flowspec plan` can still estimate it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
from torch import nn

TRAIN_PASSES = 3.0  # a forward and its backward (= 2 forwards)


@dataclass(frozen=True)
class Cost:
    """What an objective costs, in forward passes of the model at the stage's resolution.

    forwards_per_sample: per training sample of one optimizer step (rollouts, teacher and reference
        forwards included; a backward counts as 2).
    one_off_forwards: done once per stage (generated pairs, prior images, teacher samples).
    frozen_copies: fields naming the frozen copies of the model the stage holds in memory
        ("teacher", "reference"); each defaults to the `from` stage, and under LoRA a copy of the
        starting weights is free (the adapter disabled).
    """

    forwards_per_sample: float = TRAIN_PASSES
    one_off_forwards: float = 0.0
    frozen_copies: tuple[str, ...] = ()
    teacher_forwards: float = 0.0  # of forwards_per_sample, the frozen teacher's (a distillation stage's)
    trained_copies: int = 0  # extra trained copies of the model (DMD2's fake score model), with their optimizer state


class Objective:
    """Base of every objective. Subclasses implement __call__ and, when they differ, modules and cost.

    `ctx` is the stage's runtime context (runtime/ops/context.py): ctx.bundle (denoiser, text encoder,
    codec), ctx.stream (the data), ctx.stage (the stage's spec), ctx.device, ctx.seed and what other ops
    loaded. `options` is the validated Options model of a custom kind (None for the built-in ones).
    """

    Options: ClassVar[type | None] = None

    def __init__(self, ctx, options: Any = None):
        self.ctx, self.options = ctx, options

    def __call__(self, step: int, micro: int) -> tuple[torch.Tensor, dict]:
        """The loss of micro-batch `micro` of optimizer step `step` (0-based) and metrics to log. Random
        draws must be functions of (seed, step, place in the global batch): see core/randomness.py."""
        raise NotImplementedError

    def modules(self) -> dict[str, nn.Module]:
        """Trained modules besides the model (e.g. REPA projectors): optimized, checkpointed, not exported."""
        return {}

    def learning_rates(self) -> dict[str, float]:
        """Learning rates of their own for some of `modules()` (by name); the others use optimizer.lr."""
        return {}

    @classmethod
    def cost(cls, stage, options: Any = None) -> Cost:
        return Cost()


OBJECTIVES: dict[str, type[Objective]] = {}
COSTS: dict[str, Callable[[Any, Any], Cost]] = {}


def register_objective(name: str) -> Callable[[type[Objective]], type[Objective]]:
    """Class decorator: `name` runs this objective, and its `cost` is the name's cost model."""
    def bind(cls: type[Objective]) -> type[Objective]:
        assert name not in OBJECTIVES, f"objective '{name}' registered twice"
        OBJECTIVES[name] = cls
        COSTS[name] = cls.cost
        return cls
    return bind


def register_cost(name: str) -> Callable[[Callable], Callable]:
    """Function decorator: the cost model of an objective whose runtime has not landed yet."""
    def bind(fn: Callable) -> Callable:
        assert name not in COSTS, f"cost model '{name}' registered twice"
        COSTS[name] = fn
        return fn
    return bind
