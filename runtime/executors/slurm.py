"""The SLURM executor: one submitit job per stage, chained with afterok in plan order.

Inside a job every task is one rank (torch.distributed from the SLURM environment). On SLURM's
signal (time limit or preemption) the loop finishes its step, rank 0 writes a checkpoint, and
submitit's own handler requeues the job; the requeued job resumes from that checkpoint exactly.
"""
from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ...compiler import Issue, Location, SpecError
from ...compiler.lower import cache_status
from ...compiler.plan import Plan, StagePlan
from ...schemas.executor import Slurm
from .shared_fs import check_run_folder

RECORD = "slurm.json"
# What `run --executor slurm` calls: sbatch to submit (submitit also runs srun inside the job), squeue
# and sacct to refuse a second submission of live stages and to follow them with --wait.
SUBMISSION_COMMANDS = ("sbatch", "srun", "squeue", "sacct")


def run_root(plan: Plan) -> Path:
    return Path(plan.spec.output_dir) / plan.spec.name


def slurm_block(plan: Plan, name: str) -> Slurm:
    """The stage's executor when it is a slurm block (spec root merged with the stage's own), else defaults."""
    block = next(s for s in plan.spec.stages if s.name == name).executor
    return block if isinstance(block, Slurm) else Slurm()


def job_parameters(block: Slurm, stage_name: str, spec_name: str) -> dict:
    """submitit SlurmExecutor parameters (sbatch's own names) for one stage's job."""
    params = {"job_name": f"{spec_name}.{stage_name}", "time": block.timeout_min, "nodes": block.nodes,
              "ntasks_per_node": block.tasks_per_node(), "cpus_per_task": block.cpus_per_task,
              "signal_delay_s": block.signal_delay_s, "setup": list(block.setup)}
    if block.gpus_per_node:
        params["gpus_per_node"] = block.gpus_per_node
    if block.mem_gb is not None:
        params["mem"] = f"{round(block.mem_gb * 1024)}M"
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(block, key) is not None:
            params[key] = getattr(block, key)
    # A job whose upstream failed is cancelled at once instead of pending forever, whatever the
    # cluster's DependencyParameters say.
    params["additional_parameters"] = {"kill_on_invalid_dep": "yes", **block.sbatch}
    # A rank that fails ends its job's other ranks, which would otherwise wait in a collective until the limit.
    params["srun_args"] = ["--kill-on-bad-exit=1"]
    return params


def stage_executor(folder: Path, block: Slurm, stage_name: str, spec_name: str, after: str | None = None,
                   dependency: str | None = None):
    """The submitit executor of one stage's job (its sbatch script, its submission), `afterok` job `after`, or
    with sbatch's `dependency` as given (a sweep's arrays: runtime/executors/sweep_slurm.py)."""
    executor = _executor_class()(str(folder / "%j"), max_num_timeout=block.max_requeues)
    params = job_parameters(block, stage_name, spec_name)
    if after is not None:
        dependency = f"afterok:{after}"
    if dependency:
        params["additional_parameters"]["dependency"] = dependency
    executor.update_parameters(**params)
    return executor


@functools.cache
def _executor_class() -> type:
    from submitit import SlurmExecutor

    class StageExecutor(SlurmExecutor):
        """submitit's SlurmExecutor without its own probe for `srun` (which raises a bare RuntimeError):
        flowspec checks SLURM's commands itself before submitting, with a message that says what to do,
        and an executor that only writes a job's script needs no SLURM at all."""

        @classmethod
        def affinity(cls) -> int:
            return 1

    return StageExecutor


class StageJob:
    """What runs in every task of a stage's job. Checkpointable in submitit's sense: `checkpoint()`
    returns the same call, and the stage's own checkpoints carry the state."""

    def __init__(self, plan: Plan, stage: str, fresh: bool, cwd: str):
        self.plan, self.stage, self.fresh, self.cwd = plan, stage, fresh, cwd

    def __call__(self) -> dict:
        import submitit
        import torch

        from ..distributed import from_environment, shutdown
        from ..train.loop import Preempted, TrainingDiverged
        from .local import run_stage

        os.chdir(self.cwd)
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        if not torch.cuda.is_available():
            torch.set_num_threads(int(os.environ.get("SLURM_CPUS_PER_TASK", "1")))
        requeue = signal.getsignal(signal.SIGUSR2)  # submitit's checkpoint-and-requeue handler
        asked: list[int] = []
        signal.signal(signal.SIGUSR2, lambda signum, frame: asked.append(signum))
        dist = from_environment()
        stage_plan = self.plan.stage(self.stage)
        # Only the first run of a job may start afresh; a requeued one resumes what it wrote.
        fresh = self.fresh and int(os.environ.get("SLURM_RESTART_COUNT", "0")) == 0
        finished = False
        try:
            run_stage(self.plan, stage_plan, fresh, dist, stop_requested=lambda: bool(asked))
            finished = True
        except TrainingDiverged as exc:  # the job fails, so SLURM cancels the stages after it
            raise RuntimeError(f"stage '{self.stage}' stopped: {exc} (stage folder {stage_plan.run_dir})") from None
        except Preempted as stop:
            print(f"[{self.stage}] signal received: checkpoint at step {stop.step} written, requeueing", flush=True)
            shutdown(dist)
            if callable(requeue):
                try:
                    requeue(signal.SIGUSR2, None)  # rank 0: requeue and exit; other ranks return
                except subprocess.CalledProcessError as exc:
                    # `scontrol requeue` runs inside the job, so the requeue it asked for can end it
                    # with SIGTERM before it returns: the job is requeued all the same.
                    if exc.returncode != -signal.SIGTERM:
                        raise
            # Other ranks leave cleanly: a failing exit would make srun (--kill-on-bad-exit) end rank 0
            # before its requeue went through.
            raise SystemExit(0 if not dist.main else -1)
        finally:  # a process group left to interpreter exit can abort the process
            shutdown(dist, clean=finished)
        return {"stage": self.stage, "run_dir": stage_plan.run_dir}

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


@dataclass
class Submitted:
    stage: str
    job_id: str
    folder: str
    run_dir: str
    submitted: str = ""  # local time, sacct's format: accounting records of older jobs with this id are ignored


def submit_plan(plan: Plan, fresh: bool = False) -> list[Submitted]:
    """Queue the chain: one job per unfinished stage, each after the previous one (afterok)."""
    import submitit

    root = run_root(plan)
    folder = root / "slurm"
    # sacct's time format; a minute early, for clock skew between this machine and the controller
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 60))
    pending = []
    for stage_plan in plan.stages:
        if cache_status(stage_plan.run_dir) == "hit":
            print(f"[{stage_plan.name}] cached: {stage_plan.run_dir}", flush=True)
        else:
            pending.append((stage_plan, slurm_block(plan, stage_plan.name)))
    check_run_folder(root, pending)
    jobs, submitted = [], []
    for stage_plan, block in pending:
        executor = stage_executor(folder, block, stage_plan.name, plan.spec.name,
                                  after=jobs[-1].job_id if jobs else None)
        try:
            job = executor.submit(StageJob(plan, stage_plan.name, fresh, os.getcwd()))
        except submitit.core.utils.FailedJobError as exc:
            for earlier in jobs:
                earlier.cancel(check=False)
            raise SpecError([refusal(stage_plan, block, str(exc), [s.stage for s in submitted])]) from None
        jobs.append(job)
        # absolute paths: status, cancel and --wait work from any directory
        submitted.append(Submitted(stage_plan.name, str(job.job_id), str((folder / str(job.job_id)).resolve()),
                                   str(Path(stage_plan.run_dir).resolve()), since))
        after = f", after job {jobs[-2].job_id}" if len(jobs) > 1 else ""
        print(f"[{stage_plan.name}] submitted job {job.job_id}{after} ({block.nodes} node(s) x "
              f"{block.tasks_per_node()} task(s)) -> {stage_plan.run_dir}", flush=True)
    if submitted:
        write_record(root, submitted)
    return submitted


def require_slurm(plan: Plan, flag: str | None) -> None:
    """The first step of a SLURM run, before any model is built: SLURM's commands, configuration and
    controller, refused in one line at what asked for SLURM (`--executor slurm`, or the spec's executor)."""
    from .reach import check, local_instead

    with asked_for(plan, flag):
        check(SUBMISSION_COMMANDS, local_instead(plan.source, list(plan.spec.profiles)))


def asked_for(plan: Plan, flag: str | None):
    """Positions SLURM's failures at what asked for SLURM: `--executor slurm`, or the spec's executor."""
    from . import follow

    where, key = (f"--executor {flag}", "") if flag else (plan.stages[0].executor_loc, "executor.kind")
    return follow.asked_for(where, key)


def refuse_live_jobs(plan: Plan) -> None:
    """Two jobs training one stage folder would fight over its checkpoints: refuse a second submission
    (the stage lock would refuse it too, but only once the job runs, and with less to say).

    A SLURM that cannot be asked raises SlurmUnavailable: a job whose state is unknown is never taken
    for an ended one."""
    from .follow import RUNNING, job_states

    root = run_root(plan)
    mine = {str(Path(s.run_dir).resolve()) for s in plan.stages}
    earlier = [job for job in read_record(root) if job.run_dir in mine]
    if not earlier:
        return
    states = job_states(earlier)
    live = [f"{job.stage} (job {job.job_id}, {states[job.job_id]})" for job in earlier
            if states[job.job_id] in RUNNING - {"UNKNOWN"}]
    if live:
        raise SpecError([Issue(Location(plan.source), "executor",
                               f"stages of this run are already queued or running: {', '.join(live)}; follow them "
                               f"with `flowspec status {root}` or stop them with `flowspec cancel {root}`")])


def refusal(stage_plan: StagePlan, block: Slurm, message: str, cancelled: list[str]) -> Issue:
    """sbatch's reason for refusing a job, as a positioned spec error with what was asked."""
    reasons = [line.split("error:", 1)[-1].strip() for line in message.splitlines() if "error" in line.lower()]
    reason = "; ".join(dict.fromkeys(reasons)) or message.strip()
    asked = ", ".join(f"{k}={v}" for k, v in [("partition", block.partition), ("nodes", block.nodes),
                                                ("gpus_per_node", block.gpus_per_node),
                                                ("cpus_per_task", block.cpus_per_task), ("mem_gb", block.mem_gb),
                                                ("constraint", block.constraint), ("qos", block.qos),
                                                ("account", block.account)] if v is not None)
    undone = f"; the jobs already queued for {', '.join(cancelled)} were cancelled" if cancelled else ""
    return Issue(Location.parse(stage_plan.loc), f"stages.{stage_plan.name}.executor",
                 f"SLURM refused the job for stage '{stage_plan.name}': {reason} (asked for {asked}){undone}")


def write_record(root: Path, submitted: list[Submitted]) -> None:
    """runs/<name>/slurm.json: every submission, newest last (status and cancel read it)."""
    path = root / RECORD
    history = json.loads(path.read_text()) if path.exists() else []
    history.append({"submitted": time.strftime("%Y-%m-%d %H:%M:%S"), "jobs": [vars(s) for s in submitted]})
    root.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(history, indent=2))
    os.replace(tmp, path)


def read_record(root: Path) -> list[Submitted]:
    path = root / RECORD
    if not path.exists():
        return []
    return [Submitted(**job) for job in json.loads(path.read_text())[-1]["jobs"]]
