"""The local executor: stage after stage on this machine, in one process or in `--nproc` processes
(torch.distributed: gloo on CPU, NCCL on GPUs), skipping stages whose artifact exists."""
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import torch

from ...compiler import SpecError
from ...compiler.lower import cache_status
from ...compiler.plan import Plan, StagePlan
from ..distributed import SINGLE, Distributed, from_environment, shutdown
from ..train.loop import TrainingDiverged

DIVERGED = 1
USER_ERROR = 2


def run_stage(plan: Plan, stage_plan: StagePlan, fresh: bool, dist: Distributed = SINGLE,
              stop_requested=lambda: False) -> None:
    """One stage in this process (one rank of it when `dist` is active); raises TrainingDiverged."""
    from .stage import StageRun

    device = dist.device()
    if cache_status(stage_plan.run_dir) == "hit":
        if dist.main:
            print(f"[{stage_plan.name}] cached: {stage_plan.run_dir}", flush=True)
        return
    if dist.main:
        ranks = f" x {dist.world} processes" if dist.active else ""
        print(f"[{stage_plan.name}] {stage_plan.kind}, {stage_plan.steps} steps on {device}{ranks} -> "
              f"{stage_plan.run_dir}", flush=True)
    StageRun(plan, stage_plan, device, fresh, dist, stop_requested).run()
    if dist.main:
        print(f"[{stage_plan.name}] done: {Path(stage_plan.run_dir) / 'report.md'}", flush=True)


def _run_all(plan: Plan, fresh: bool, dist: Distributed) -> int:
    for stage_plan in plan.stages:
        try:
            run_stage(plan, stage_plan, fresh, dist)
        except TrainingDiverged as exc:
            if dist.main:
                print(f"[{stage_plan.name}] stopped: {exc}", file=sys.stderr, flush=True)
            return DIVERGED
    return 0


def run_local(plan: Plan, fresh: bool = False, nproc: int = 1) -> int:
    if nproc <= 1:
        return _run_all(plan, fresh, SINGLE)
    import torch.multiprocessing as mp

    port = _free_port()
    try:
        mp.spawn(_worker, args=(nproc, port, plan, fresh), nprocs=nproc, join=True)
    except mp.ProcessExitedException as exc:
        return exc.exit_code if exc.exit_code and exc.exit_code > 0 else DIVERGED
    return 0


def _worker(rank: int, world: int, port: int, plan: Plan, fresh: bool) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    if not torch.cuda.is_available():  # share the cores instead of oversubscribing them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    dist = from_environment()
    code = DIVERGED
    try:
        code = _run_all(plan, fresh, dist)
    except SpecError as exc:  # e.g. the stage is locked by another run: a user error, not a traceback
        for issue in exc.issues:
            print(issue, file=sys.stderr, flush=True)
        code = USER_ERROR
    finally:
        shutdown(dist, clean=code == 0)
    if code:
        sys.exit(code)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
