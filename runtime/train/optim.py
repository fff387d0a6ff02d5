"""Optimizer and learning-rate schedule from the spec's `optimizer` block."""
from __future__ import annotations

import math

import torch


def build_optimizer(block, params: list[torch.nn.Parameter], device: torch.device) -> torch.optim.Optimizer:
    if block.kind == "adamw":
        # The fused kernel (CUDA and CPU): one pass over each tensor instead of a dozen; on a 3x256 MLP on CPU
        # it takes 0.16 ms a step against 0.6 ms for torch's default (benchmarks/step_overhead.py --tiny).
        return torch.optim.AdamW(params, lr=block.lr, betas=tuple(block.betas), eps=block.eps,
                                 weight_decay=block.weight_decay, fused=True)
    if block.kind == "sgd":
        return torch.optim.SGD(params, lr=block.lr, momentum=block.momentum, weight_decay=block.weight_decay)
    raise ValueError(f"unknown optimizer kind {block.kind}")


def lr_factor(schedule, step: int, total: int) -> float:
    """Multiplier of the peak rate at `step` (0-based): linear warm-up, then constant, cosine or linear decay."""
    warmup = schedule.warmup_steps
    if step < warmup:
        return (step + 1) / warmup
    if schedule.kind == "constant":
        return 1.0
    progress = min((step - warmup) / max(total - warmup - 1, 1), 1.0)
    floor = schedule.min_lr_ratio
    if schedule.kind == "cosine":
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    if schedule.kind == "linear":
        return floor + (1 - floor) * (1 - progress)
    raise ValueError(f"unknown schedule kind {schedule.kind}")


def build_scheduler(optimizer, schedule, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(schedule, step, total_steps))
