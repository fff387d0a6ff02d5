"""Following submitted stages: `run --wait`, `flowspec status RUN`, `flowspec cancel RUN`.

A job's state comes from the queue (squeue) while SLURM holds the job, then from accounting (sacct);
its progress from the stage folder (metrics.jsonl, the DONE marker), which every executor writes alike.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from ...compiler.lower import DONE_MARKER
from .slurm import Submitted, read_record

FINISHED_OK = {"COMPLETED"}
RUNNING = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED", "UNKNOWN"}
LOG_LINES = 20
LOST_AFTER_S = 300  # neither the queue nor accounting knows the job for this long: it is reported lost


def job_states(jobs: list[Submitted]) -> dict[str, str]:
    """Job id -> SLURM state (the first word: "CANCELLED by 0" -> "CANCELLED"): from the queue while SLURM
    still holds the job, else from accounting, counting only records since our submission (a cluster
    whose job ids started again must not answer with an older job of the same id); "UNKNOWN" if neither
    knows it yet."""
    ids = ",".join(job.job_id for job in jobs)
    states = _states(["squeue", "-h", "-o", "%i|%T", "-j", ids])
    rest = [job for job in jobs if job.job_id not in states]
    if rest:
        since = min((job.submitted for job in rest), default="") or "1970-01-01T00:00:00"
        states.update(_states(["sacct", "-X", "-n", "-P", "-o", "JobIDRaw,State", "-S", since,
                               "-j", ",".join(job.job_id for job in rest)]))
    return {job.job_id: states.get(job.job_id, "UNKNOWN") for job in jobs}


def _states(command: list[str]) -> dict[str, str]:
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    states: dict[str, str] = {}
    for line in out.stdout.splitlines():
        job_id, _, state = line.partition("|")
        if state:
            states[job_id.strip()] = state.split()[0]
    return states


def progress(run_dir: str) -> dict:
    """Step and last logged metrics of a stage folder, whoever ran it."""
    folder = Path(run_dir)
    out: dict = {"done": (folder / DONE_MARKER).exists()}
    metrics = folder / "metrics.jsonl"
    if metrics.exists():
        lines = metrics.read_text().strip().splitlines()
        if lines:
            last = json.loads(lines[-1])
            out.update(step=last.get("step"), loss=last.get("loss"))
    return out


def log_paths(job: Submitted) -> list[Path]:
    folder = Path(job.folder)
    return [folder / f"{job.job_id}_0_log.err", folder / f"{job.job_id}_0_log.out"]


def log_tail(job: Submitted, lines: int = LOG_LINES) -> str:
    for path in log_paths(job):
        if path.exists() and path.stat().st_size:
            text = path.read_text(errors="replace").rstrip().splitlines()
            return f"{path}:\n" + "\n".join("    " + line for line in text[-lines:])
    return f"{log_paths(job)[0]}: (no log written; the job never started)"


def describe(job: Submitted, state: str) -> str:
    info = progress(job.run_dir)
    step = f" step {info['step']}" if info.get("step") is not None else ""
    loss = f" loss {info['loss']:.4f}" if isinstance(info.get("loss"), float) else ""
    return f"[{job.stage}] job {job.job_id} {state}{step}{loss}"


def wait(jobs: list[Submitted], poll_s: float = 2.0, stream=None) -> int:
    """Follow the chain until every job has ended; 0 if all completed, 1 (with the failed log) otherwise."""
    stream = stream or sys.stdout
    last: dict[str, str] = {}
    failed: list[tuple[Submitted, str]] = []
    pending, unknown_since = list(jobs), {}
    while pending:
        states = job_states(pending)
        for job in list(pending):
            state = states[job.job_id]
            first_unknown = unknown_since.setdefault(job.job_id, time.monotonic()) if state == "UNKNOWN" else None
            if first_unknown is not None and time.monotonic() - first_unknown > LOST_AFTER_S:
                state = "LOST"
            line = describe(job, state)
            if line != last.get(job.job_id):
                print(line, file=stream, flush=True)
                last[job.job_id] = line
            if state in RUNNING:
                continue
            pending.remove(job)
            if state not in FINISHED_OK:
                failed.append((job, state))
        if pending:
            time.sleep(poll_s)
    first = failed[0][0] if failed else None
    for job, state in failed:
        if job is first:
            print(f"[{job.stage}] {state}; the end of its log:\n{log_tail(job)}", file=sys.stderr, flush=True)
        else:
            print(f"[{job.stage}] {state}: not run because stage '{first.stage}' failed", file=sys.stderr, flush=True)
    return 1 if failed else 0


def status(root: Path, follow: bool = False, stream=None) -> int:
    stream = stream or sys.stdout
    jobs = read_record(root)
    if not jobs:
        return local_status(root, stream)
    if follow:
        return wait(jobs, stream=stream)
    states = job_states(jobs)
    for job in jobs:
        state = states[job.job_id]
        print(describe(job, state) + f"  {job.run_dir}", file=stream)
        if state not in RUNNING and state not in FINISHED_OK:
            print(f"    log: {log_paths(job)[0]}", file=stream)
    return 0


def local_status(root: Path, stream) -> int:
    """A run that was never submitted: each stage folder, finished or not, and its last logged step."""
    stages = sorted(p for p in root.glob("*-*") if p.is_dir() and (p / "spec.json").exists())
    if not stages:
        print(f"{root}: no stages and no SLURM submission found", file=sys.stderr)
        return 2
    for folder in stages:
        info = progress(str(folder))
        print(f"[{folder.name}] local {'done' if info['done'] else 'unfinished'} step {info.get('step')}", file=stream)
    return 0


def cancel(root: Path) -> int:
    jobs = read_record(root)
    if not jobs:
        print(f"{root}: no SLURM submission found", file=sys.stderr)
        return 2
    states = job_states(jobs)
    live = [job for job in jobs if states[job.job_id] in RUNNING]
    if live:
        subprocess.run(["scancel", *[job.job_id for job in live]], check=True)
    for job in jobs:
        print(f"[{job.stage}] job {job.job_id} " + ("cancelled" if job in live else "had already ended"))
    return 0
