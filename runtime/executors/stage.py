"""Running one StagePlan in this process: identity and drift check, the stage lock, the plan's ops in
order on one StageContext, and the finished marker. Nothing here depends on the stage's kind."""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import socket
import time
from pathlib import Path

import torch

from ...compiler import Issue, Location, SpecError
from ...compiler.lower import DONE_MARKER, HASH_EXCLUDED
from ...compiler.plan import Plan, StagePlan
from ..data.sources import DataError
from ..distributed import SINGLE, Distributed
from ..ops import OPS, StageContext
from ..ops.context import data_error, split_batch
from ..report.collect import ESTIMATE
from ..report.summary import loss_plot, write_report
from ..train.checkpoint import latest_checkpoint, read_identity, spec_differences, write_identity, write_json

LOCK_FILE = ".lock"


def identity(plan: Plan, stage_plan: StagePlan) -> dict:
    """The resolved configuration that determines a stage's weights (its hash covers the same)."""
    stage = plan.spec_stage(stage_plan.name)
    return {"hash": stage_plan.hash, "seed": stage_plan.seed,
            "model": plan.spec.model.model_dump(mode="json", by_alias=True),
            "stage": stage.model_dump(mode="json", by_alias=True, exclude=HASH_EXCLUDED),
            "upstream": {f: plan.stage(n).hash for f, n in stage_plan.upstream.items()}}


class StageRun:
    def __init__(self, plan: Plan, stage_plan: StagePlan, device: torch.device, fresh: bool = False,
                 dist: Distributed = SINGLE, stop_requested=lambda: False):
        self.plan, self.stage_plan, self.device, self.fresh = plan, stage_plan, device, fresh
        self.dist, self.stop_requested = dist, stop_requested
        self.stage = plan.spec_stage(stage_plan.name)
        self.run_dir = Path(stage_plan.run_dir)

    def run(self) -> None:
        self.check_drift()
        with self.exclusive():
            self.run_ops()

    # ------------------------------------------------------------------------- before starting
    def check_drift(self) -> None:
        """Refuse to silently abandon an unfinished run of this stage whose spec has since changed."""
        if self.fresh:
            return
        mine = identity(self.plan, self.stage_plan)
        for other in sorted(self.run_dir.parent.glob(f"{self.stage.name}-*")):
            if other == self.run_dir or (other / DONE_MARKER).exists() or latest_checkpoint(other) is None:
                continue
            theirs = read_identity(other)
            if theirs is None:
                continue
            changed = spec_differences(theirs, mine)
            step = int(latest_checkpoint(other).stem.split("-")[1])
            raise SpecError([Issue(Location(self.plan.source), f"stages.{self.stage.name}",
                                   f"an unfinished run of this stage ({other}, checkpoint at step {step}) was made "
                                   f"with a different spec: {'; '.join(changed) or 'flowspec version'}. Resuming "
                                   "it would mix two configurations: restore those keys to resume it, or pass "
                                   "--fresh to start a new run (its checkpoints are kept)")])

    def split_batch(self) -> tuple[int, int]:
        return split_batch(self.stage, self.dist.world, self.stage_plan.loc)

    @contextlib.contextmanager
    def exclusive(self):
        """Rank 0 holds an exclusive lock on the stage folder while the stage runs: a second `flowspec run`
        (here, in another shell, or a SLURM job) of the same stage is refused instead of mixing checkpoints.
        The OS releases the lock when the process ends, however it ends."""
        if not self.dist.main:
            yield
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / LOCK_FILE, "a+") as handle:
            self._lock(handle)
            handle.truncate(0)
            handle.write(f"process {os.getpid()} on {socket.gethostname()}")
            handle.flush()
            yield

    def check_not_running(self) -> None:
        """The lock, tried and released at once: refuses before any worker process is started."""
        if (self.run_dir / LOCK_FILE).exists():
            with open(self.run_dir / LOCK_FILE, "a+") as handle:
                self._lock(handle)

    def _lock(self, handle) -> None:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise SpecError([Issue(Location.parse(self.stage_plan.loc), f"stages.{self.stage.name}",
                                   f"this stage is being run by {holder} ({self.run_dir}); wait for it to end, "
                                   "or stop it, before running the stage again")]) from None

    # ------------------------------------------------------------------------------- the ops
    def run_ops(self) -> None:
        """Every op of the plan in order (rank 0 alone for main-only ops), then (rank 0) the finished marker;
        every rank leaves together."""
        if self.dist.main:
            write_identity(self.run_dir, identity(self.plan, self.stage_plan))
            self.write_estimate()
        self.dist.barrier()
        started = time.time()
        ctx = StageContext(stage=self.stage, seed=self.stage_plan.seed, device=self.device, plan=self.plan,
                           stage_plan=self.stage_plan, dist=self.dist, stop_requested=self.stop_requested,
                           run_dir=self.run_dir)
        try:
            for node in self.stage_plan.ops:
                operator = OPS[node.op]
                if self.dist.main or not operator.main_only:
                    with self.data_errors():
                        operator.run(ctx, node.params)
            if self.dist.main:
                self.finish(ctx, time.time() - started)
            self.dist.barrier()
        finally:
            if ctx.wandb is not None:
                ctx.wandb.finish()

    def write_estimate(self) -> None:
        """The plan's estimate of this stage (FLOPs, memory, GPU-hours on the declared hardware), for the
        report to set beside what the run measured; a stage run without one (the Python API) writes none."""
        if self.stage_plan.estimate is not None:
            write_json(self.run_dir / ESTIMATE, dataclasses.asdict(self.stage_plan.estimate))

    @contextlib.contextmanager
    def data_errors(self):
        """A problem with the user's data is a positioned user error at the stage's data line, not a traceback;
        the checkpoints written so far stay as they are."""
        try:
            yield
        except DataError as exc:
            raise data_error(self.stage_plan, str(exc)) from None

    def finish(self, ctx: StageContext, seconds: float) -> None:
        summary = {"stage": self.stage.name, "kind": self.stage.kind, "hash": self.stage_plan.hash,
                   "steps": self.stage.steps, "seconds": round(seconds, 1), **ctx.results}
        for cache in ctx.caches:
            cache.flush()
            summary.setdefault("caches", {})[cache.folder.name] = cache.stats()
        (self.run_dir / "results.json").write_text(json.dumps(summary, indent=2))
        resolved = {"model": self.plan.model_spec().model_dump(mode="json", by_alias=True),  # the VAE it loaded
                    "stage": self.stage.model_dump(mode="json", by_alias=True)}
        (self.run_dir / "resolved.json").write_text(json.dumps(resolved, indent=2))
        loss_plot(self.run_dir)
        write_report(self.run_dir, summary)
        (self.run_dir / DONE_MARKER).write_text(json.dumps(summary, indent=2))
