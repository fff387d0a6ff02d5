"""The local executor: stage after stage in this process, skipping stages whose artifact exists."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from ...compiler.lower import cache_status
from ...compiler.plan import Plan
from ..train.loop import TrainingDiverged

DIVERGED = 1


def pick_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def run_local(plan: Plan, fresh: bool = False) -> int:
    from ..stages import STAGE_RUNNERS

    device = pick_device()
    for stage_plan in plan.stages:
        if cache_status(stage_plan.run_dir) == "hit":
            print(f"[{stage_plan.name}] cached: {stage_plan.run_dir}", flush=True)
            continue
        print(f"[{stage_plan.name}] {stage_plan.kind}, {stage_plan.steps} steps on {device} -> {stage_plan.run_dir}",
              flush=True)
        runner = STAGE_RUNNERS[stage_plan.kind](plan, stage_plan, device, fresh)
        try:
            runner.run()
        except TrainingDiverged as exc:
            print(f"[{stage_plan.name}] stopped: {exc}", file=sys.stderr, flush=True)
            return DIVERGED
        print(f"[{stage_plan.name}] done: {Path(stage_plan.run_dir) / 'report.md'}", flush=True)
    return 0
