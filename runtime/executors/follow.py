"""Following submitted stages: `run --wait`, `flowspec status RUN`, `flowspec cancel RUN`.

A job's state comes from the queue (squeue) while SLURM holds the job, then from accounting (sacct);
its progress from the stage folder (metrics.jsonl, the DONE marker), which every executor writes alike.

SLURM's own answers are read as SLURM gives them, including the ones that come with a non-zero exit
(a job the queue no longer holds, a cluster without accounting). Any other failure of a command (it is
not installed, the controller does not answer) is a SlurmUnavailable error, never a job state: a job
SLURM could not be asked about must not read UNKNOWN, or a second submission of a running stage
would slip through refuse_live_jobs.
"""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from ...compiler.lower import DONE_MARKER
from .reach import COMMAND_TIMEOUT_S, SlurmUnavailable, check, not_installed, what_to_check
from .slurm import RECORD, Submitted, read_record

FINISHED_OK = {"COMPLETED"}
RUNNING = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED", "UNKNOWN"}
LOG_LINES = 20
LOST_AFTER_S = 300  # neither the queue nor accounting knows the job for this long: it is reported lost
# squeue asked about one job id that the controller no longer holds (finished and purged after
# MinJobAge) exits 1 with this; asked about several, it leaves such ids out and exits 0. Either way
# accounting has the rest.
NOT_IN_QUEUE = "Invalid job id specified"
# sacct on a cluster that keeps no accounting (AccountingStorageType none) exits 1 with this: jobs
# that have left the queue are unknown there, which is the cluster's setup, not a failure.
NO_ACCOUNTING = "accounting storage is disabled"
# scancel of a job that ended after squeue listed it: it has ended, which is what was asked.
ALREADY_ENDED = ("already completing or completed", NOT_IN_QUEUE)


@contextmanager
def asked_for(where: str, key: str = ""):
    """SlurmUnavailable raised inside is positioned at `where`: the spec key, flag or run record that asked
    for SLURM."""
    try:
        yield
    except SlurmUnavailable as exc:
        raise exc.at(where, key) from None


def slurm_command(command: list[str], answers: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Run a SLURM client command. A non-zero exit is SLURM's answer only when every line it wrote to
    stderr says one of `answers`; any other failure raises SlurmUnavailable with the command's own words."""
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    except FileNotFoundError:
        raise SlurmUnavailable(not_installed([command[0]]), missing=True) from None
    except subprocess.TimeoutExpired:
        raise SlurmUnavailable(f"`{shlex.join(command)}` did not answer within {COMMAND_TIMEOUT_S} s. "
                               + what_to_check(command[0]), missing=False) from None
    said = [line.strip() for line in out.stderr.splitlines()
            if line.strip() and "warning:" not in line.lower()]
    if out.returncode != 0 and not (said and all(any(a.lower() in line.lower() for a in answers) for line in said)):
        words = "; ".join(said[-3:]) or out.stdout.strip()[-300:] or "no message"
        raise SlurmUnavailable(f"`{shlex.join(command)}` failed (exit {out.returncode}): {words}. "
                               + what_to_check(command[0]), missing=False)
    return out


def job_states(jobs: list[Submitted]) -> dict[str, str]:
    """Job id -> SLURM state (the first word: "CANCELLED by 0" -> "CANCELLED"): from the queue while SLURM
    still holds the job, else from accounting, counting only records since our submission (a cluster
    whose job ids started again must not answer with an older job of the same id); "UNKNOWN" if neither
    knows it (yet, or ever, on a cluster without accounting). Raises SlurmUnavailable if SLURM cannot
    be asked."""
    states = _states(slurm_command(["squeue", "-h", "-o", "%i|%T", "-j", _asked(jobs)], answers=(NOT_IN_QUEUE,)))
    rest = [job for job in jobs if job.job_id not in states]
    if rest:
        since = min((job.submitted for job in rest), default="") or "1970-01-01T00:00:00"
        # JobID names an array's task as submitted (`123_0`); JobIDRaw is the task's own number
        whole: dict[str, str] = {}
        states.update(_states(slurm_command(["sacct", "-X", "-n", "-P", "-o", "JobID,JobIDRaw,State", "-S", since,
                                             "-j", _asked(rest)], answers=(NO_ACCOUNTING,)), whole))
        for job in rest:  # tasks of an array that was never split: one record, the array's own JobID (`123`)
            array, _, task = job.job_id.partition("_")
            if task and job.job_id not in states and array in whole:
                states[job.job_id] = whole[array]
    return {job.job_id: states.get(job.job_id, "UNKNOWN") for job in jobs}


def _asked(jobs: list[Submitted]) -> str:
    """The ids to ask for: an array task's array too, since tasks that never left the queue's pending line
    (cancelled while waiting) are known to accounting only by the array's id (`123`, or `123_[0-1]`), which
    `-j 123_0` misses."""
    return ",".join(dict.fromkeys(i for job in jobs for i in (job.job_id, job.job_id.partition("_")[0])))


def _states(out: subprocess.CompletedProcess, whole: dict[str, str] | None = None) -> dict[str, str]:
    """Each id of each line -> its state; `whole` also gets the state of each line whose first id is a plain
    number (for an array, the record of its tasks that never ran apart)."""
    states: dict[str, str] = {}
    if out.returncode != 0:  # an answer that knows none of the jobs
        return states
    for line in out.stdout.splitlines():
        *ids, state = line.split("|")
        if ids and state.strip():
            if whole is not None and ids[0].strip().isdigit():
                whole[ids[0].strip()] = state.split()[0]
            for job_id in ids:
                states.update(dict.fromkeys(array_tasks(job_id.strip()), state.split()[0]))
    return states


def array_tasks(job_id: str) -> list[str]:
    """The ids a queue line stands for: an array's pending tasks share one line, `123_[0-3,5%2]` (tasks 0 to 3
    and 5, at most 2 at a time); any other id stands for itself."""
    match = re.fullmatch(r"(\d+)_\[([\d,-]+)(?:%\d+)?\]", job_id)
    if not match:
        return [job_id]
    tasks = []
    for part in match.group(2).split(","):
        first, _, last = part.partition("-")
        tasks += [f"{match.group(1)}_{i}" for i in range(int(first), int(last or first) + 1)]
    return tasks


def node_trouble() -> list[str]:
    """The cluster's nodes SLURM holds down, drained, failing or not responding, with its reason: what a job
    that was requeued after a node failure (and now waits) or that failed with its node is waiting on."""
    try:
        out = slurm_command(["sinfo", "-h", "-N", "-t", "down,drain,fail,no_respond", "-o", "%N|%T|%E"])
    except SlurmUnavailable:  # extra information only: a cluster that will not say is no error here
        return []
    found = []
    for line in out.stdout.splitlines():
        node, _, rest = line.partition("|")
        state, _, reason = rest.partition("|")
        if node.strip():
            found.append(f"node {node.strip()} {state.strip()}" + (f" ({reason.strip()})" if reason.strip() not in
                                                                   ("", "none") else ""))
    return sorted(set(found))


def progress(run_dir: str) -> dict:
    """Step and last logged metrics of a stage folder, whoever ran it."""
    folder = Path(run_dir)
    out: dict = {"done": (folder / DONE_MARKER).exists()}
    metrics = folder / "metrics.jsonl"
    if metrics.exists():
        lines = metrics.read_text().strip().splitlines()
        if lines:
            last = json.loads(lines[-1])
            out.update(step=last.get("step"), loss=last.get("loss"), it_per_s=last.get("it_per_s"))
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


def wait(jobs: list[Submitted], poll_s: float = 2.0, stream=None, patience_s: float = LOST_AFTER_S) -> int:
    """Follow the chain until every job has ended; 0 if all completed, 1 (with the failed log) otherwise.
    A SLURM that stops answering (a controller restart, a busy controller) is asked again for up to
    `patience_s`, then SlurmUnavailable ends the wait; a missing command ends it at once."""
    stream = stream or sys.stdout
    last: dict[str, str] = {}
    failed: list[tuple[Submitted, str]] = []
    pending, unknown_since, silent_since = list(jobs), {}, None
    while pending:
        try:
            states = job_states(pending)
            silent_since = None
        except SlurmUnavailable as exc:
            silent_since = _keep_asking(exc, silent_since, patience_s, poll_s)
            time.sleep(poll_s)
            continue
        for job in list(pending):
            state = states[job.job_id]
            first_unknown = unknown_since.setdefault(job.job_id, time.monotonic()) if state == "UNKNOWN" else None
            if first_unknown is not None and time.monotonic() - first_unknown > LOST_AFTER_S:
                state = "LOST"
            line = describe(job, state)
            if line != last.get(job.job_id):
                if state == "PENDING" and " RUNNING" in last.get(job.job_id, ""):  # requeued: say what it waits on
                    line += "".join(f"; SLURM: {trouble}" for trouble in node_trouble())
                print(line, file=stream, flush=True)
                last[job.job_id] = line
            if state in RUNNING:
                continue
            pending.remove(job)
            if state not in FINISHED_OK:
                failed.append((job, state))
        if pending:
            time.sleep(poll_s)
    _report_failures(failed)
    return 1 if failed else 0


def _keep_asking(exc: SlurmUnavailable, silent_since: float | None, patience_s: float, poll_s: float) -> float:
    """When SLURM first failed to answer; raises once it has failed for longer than `patience_s`."""
    now = time.monotonic()
    if exc.missing or (silent_since is not None and now - silent_since > patience_s):
        raise exc
    if silent_since is None:
        print(f"{exc.message}; asking again every {poll_s:g} s for up to {patience_s:g} s", file=sys.stderr,
              flush=True)
        return now
    return silent_since


def _report_failures(failed: list[tuple[Submitted, str]]) -> None:
    first = failed[0][0] if failed else None
    for job, state in failed:
        if job is first:
            print(f"[{job.stage}] {state}; the end of its log:\n{log_tail(job)}", file=sys.stderr, flush=True)
        else:
            print(f"[{job.stage}] {state}: not run because stage '{first.stage}' failed", file=sys.stderr, flush=True)


def status(root: Path, follow: bool = False, stream=None) -> int:
    stream = stream or sys.stdout
    jobs = read_record(root)
    if not jobs:
        return local_status(root, stream)
    with asked_for(str(root / RECORD)):
        check(("squeue", "sacct"), "run `flowspec status` on a login node of the cluster that runs these jobs (their "
              "progress is also in each stage folder's metrics.jsonl)")
        if follow:
            return wait(jobs, stream=stream)
        states = job_states(jobs)
    for job in jobs:
        state = states[job.job_id]
        print(describe(job, state) + f"  {job.run_dir}", file=stream)
        if state not in RUNNING and state not in FINISHED_OK:
            print(f"    log: {log_paths(job)[0]}", file=stream)
    if any(states[job.job_id] not in FINISHED_OK for job in jobs):
        for line in node_trouble():
            print(f"SLURM: {line}; a job needing it waits (requeued after a node failure) or fails", file=stream)
    return 0


def local_status(root: Path, stream) -> int:
    """A run that was never submitted: each stage folder (in the order they were started), done, running here
    (its lock held) or stopped, its step, last loss and, running, the time left at its last logged speed."""
    stages = sorted((p for p in root.glob("*-*") if p.is_dir() and (p / "spec.json").exists()),
                    key=lambda p: (p / "spec.json").stat().st_mtime)
    if not stages:
        print(f"{root}: no stages and no SLURM submission found", file=sys.stderr)
        return 2
    for folder in stages:
        print(local_line(folder), file=stream)
    return 0


def local_line(folder: Path) -> str:
    info, stage = progress(str(folder)), json.loads((folder / "spec.json").read_text()).get("stage", {})
    steps, step = stage.get("steps"), info.get("step")
    state = "done" if info["done"] else "running" if locked(folder) else "stopped"
    line = f"[{folder.name.rsplit('-', 1)[0]}] local {state}"  # folders are <stage>-<hash>
    if step is not None:
        line += f" step {step}" + (f"/{steps}" if steps else "")
    if isinstance(info.get("loss"), float):
        line += f" loss {info['loss']:.4f}"
    speed = info.get("it_per_s")
    if state == "running" and steps and step is not None and speed:
        line += f" ETA {timedelta(seconds=round((steps - step) / speed))} at {speed:.3g} it/s"
    results = folder / "results.json"
    if state == "done" and results.exists():
        line += f" in {json.loads(results.read_text()).get('seconds')} s"
    if state == "stopped":
        line += " (flowspec run resumes it)"
    return f"{line}  {folder}"


def locked(folder: Path) -> bool:
    """Whether a process holds the stage folder's lock (runtime/executors/stage.py): the stage is running."""
    import fcntl

    from .stage import LOCK_FILE

    if not (folder / LOCK_FILE).exists():
        return False
    with open(folder / LOCK_FILE, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def cancel(root: Path) -> int:
    jobs = read_record(root)
    if not jobs:
        print(f"{root}: no SLURM submission found", file=sys.stderr)
        return 2
    return cancel_jobs(jobs, root / RECORD)


def cancel_jobs(jobs: list[Submitted], record: Path) -> int:
    """scancel the jobs (of a run, or every run of a sweep: `record` names where they were read) that have not
    ended, and say of each whether it was cancelled or had already ended."""
    with asked_for(str(record)):
        check(("squeue", "sacct", "scancel"), "run `flowspec cancel` on a login node of the cluster that runs these "
              "jobs")
        states = job_states(jobs)
        live = [job for job in jobs if states[job.job_id] in RUNNING]
        if live:
            said = slurm_command(["scancel", *[job.job_id for job in live]], answers=ALREADY_ENDED).stderr
            live = [job for job in live if not re.search(rf"job id {re.escape(job.job_id)}\b", said)]
    for job in jobs:
        print(f"[{job.stage}] job {job.job_id} " + ("cancelled" if job in live else "had already ended"))
    return 0
