"""A sweep on SLURM: one job array per stage, over the members whose folder of that stage trains it.

A stage several members share (the same hash, one folder) is one task. An array waits on the arrays of the
stages its tasks read: `aftercorr` when task i reads task i of the upstream array (the sweep changed a key
both stages read, so each task has its own upstream), else `afterok` on the upstream tasks read (a shared
stage feeds every task: a job of one task). A one-task array is submitted as a plain job (submitit does so).
Each member's run folder gets its slurm.json as a single run's would, so `status` and `cancel` work on it
alone; the manifest records the arrays.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from ...compiler import SpecError
from ...compiler.lower import cache_status
from ...compiler.plan import Plan, StagePlan
from ...compiler.sweep import SWEEP_SUFFIX, Member, Sweep
from .sweep import link, write_manifest


@dataclass(frozen=True)
class Task:
    member: Member
    plan: Plan
    stage: StagePlan
    folder: str  # the real folder it trains (a member's link resolved)


def array_tasks(sweep: Sweep, plans: list[Plan]) -> list[tuple[str, list[Task]]]:
    """Per stage, in plan order: one task per folder that is not finished (links must be made first)."""
    names = list(dict.fromkeys(s.name for plan in plans for s in plan.stages))
    seen: set[str] = set()
    arrays = []
    for name in names:
        tasks = []
        for member, plan in zip(sweep.members, plans):
            stage = next((s for s in plan.stages if s.name == name), None)
            folder = os.path.realpath(stage.run_dir) if stage else None
            if stage is None or folder in seen:
                continue
            seen.add(folder)
            if cache_status(stage.run_dir) == "hit":
                print(f"[{name}] cached: {stage.run_dir}", flush=True)
            else:
                tasks.append(Task(member, plan, stage, folder))
        if tasks:
            arrays.append((name, tasks))
    return arrays


def dependency(tasks: list[Task], job_of: dict[str, str]) -> str | None:
    """sbatch's --dependency for an array of `tasks`, given the job id (`123_4`, or `123`) of each submitted
    folder: per upstream array, aftercorr when task i needs exactly its task i, else afterok on the tasks needed."""
    needs = []
    for task in tasks:
        needed: dict[str, set[str]] = {}
        for upstream in task.stage.upstream.values():
            stage = next((s for s in task.plan.stages if s.name == upstream), None)
            job = job_of.get(os.path.realpath(stage.run_dir)) if stage else None
            if job:
                array, _, index = job.partition("_")
                needed.setdefault(array, set()).add(index)
        needs.append(needed)
    terms = []
    for array in dict.fromkeys(a for needed in needs for a in needed):
        indices = [needed.get(array) for needed in needs]
        if len(tasks) > 1 and all(index == {str(i)} for i, index in enumerate(indices)):
            terms.append(f"aftercorr:{array}")
        else:
            wanted = sorted({i for index in indices if index for i in index}, key=lambda i: int(i or -1))
            terms.append("afterok:" + ":".join(f"{array}_{i}" if i else array for i in wanted))
    return ",".join(terms) or None


def submit_sweep(sweep: Sweep, plans: list[Plan], fresh: bool, flag: str | None, wait: bool) -> int:
    """Check every member (SLURM, live jobs, drift, locks, the nodes seeing the folders), then queue the arrays."""
    from . import preflight
    from .follow import wait as follow
    from .shared_fs import check_run_folder
    from .slurm import asked_for, refuse_live_jobs, require_slurm, slurm_block

    require_slurm(plans[0], flag)
    with asked_for(plans[0], flag):
        for plan in plans:
            refuse_live_jobs(plan)
    link(sweep)
    for plan in plans:
        preflight(plan, fresh, None)
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 60))  # as slurm.submit_plan
    arrays = array_tasks(sweep, plans)
    check_run_folder(sweep.folder, [(t.stage, slurm_block(t.plan, t.stage.name)) for _, ts in arrays for t in ts])
    write_manifest(sweep)
    job_of = submit_arrays(sweep, arrays, fresh)
    jobs = write_records(sweep, plans, job_of, since)
    arrays_ids = {name: job_of[tasks[0].folder].partition("_")[0] for name, tasks in arrays}
    write_manifest(sweep, {"slurm": {"arrays": arrays_ids, "jobs": {m: {j.stage: j.job_id for j in js}
                                                                    for m, js in jobs.items()}}})
    if not wait or not job_of:
        return 0
    owners = {}
    for member in sweep.members:
        for job in jobs.get(member.name, ()):
            owners.setdefault(job.job_id, _labelled(job, member.name))
    code = follow(list(owners.values()))
    from ..report.html import report_after_sweep

    report_after_sweep(sweep.folder)  # every run's report, then the comparison page: the last line
    return code


def _labelled(job, member: str):
    import dataclasses

    return dataclasses.replace(job, stage=f"{member}/{job.stage}")


def submit_arrays(sweep: Sweep, arrays: list[tuple[str, list[Task]]], fresh: bool) -> dict[str, str]:
    """Queue one array per stage; a refusal cancels what this sweep queued before it. Folder -> job id."""
    import submitit

    from .slurm import StageJob, refusal, slurm_block, stage_executor

    folder, job_of, queued = sweep.folder / "slurm", {}, []
    users = _users(sweep, arrays)
    for name, tasks in arrays:
        block = slurm_block(tasks[0].plan, name)  # members differing in executor alone are refused as duplicates
        after = dependency(tasks, job_of)
        executor = stage_executor(folder, block, name, f"{sweep.name}{SWEEP_SUFFIX}", dependency=after)
        try:
            with executor.batch():
                jobs = [executor.submit(StageJob(t.plan, name, fresh, os.getcwd())) for t in tasks]
        except submitit.core.utils.FailedJobError as exc:
            for job in queued:
                job.cancel(check=False)
            earlier = [n for n, _ in arrays[:[n for n, _ in arrays].index(name)]]
            raise SpecError([refusal(tasks[0].stage, block, str(exc), earlier)]) from None
        queued += jobs
        job_of.update({t.folder: str(job.job_id) for t, job in zip(tasks, jobs)})
        what = f"array {str(jobs[0].job_id).partition('_')[0]} of {len(jobs)} tasks" if len(jobs) > 1 else \
            f"job {jobs[0].job_id}"
        runs = "; ".join(f"{job.job_id}: {', '.join(users[t.folder])}" for t, job in zip(tasks, jobs))
        print(f"[{name}] submitted {what}" + (f", {after}" if after else "") + f" ({runs})", flush=True)
    return job_of


def _users(sweep: Sweep, arrays) -> dict[str, list[str]]:
    """Each task's folder -> the members that read it (the one that trains it first)."""
    users: dict[str, list[str]] = {}
    for name, tasks in arrays:
        for task in tasks:
            users[task.folder] = [m.name for m in sweep.members for s in m.plan.stages
                                  if s.name == name and os.path.realpath(s.run_dir) == task.folder]
    return users


def write_records(sweep: Sweep, plans: list[Plan], job_of: dict[str, str], since: str) -> dict[str, list]:
    """Each member's slurm.json: the jobs of its stages, a shared stage's being the job that trains it."""
    from .slurm import Submitted, run_root, write_record

    folder = (sweep.folder / "slurm").resolve()
    out = {}
    for member, plan in zip(sweep.members, plans):
        jobs = [Submitted(s.name, job_of[real], str(folder / job_of[real]), real, since)
                for s in plan.stages for real in [str(Path(s.run_dir).resolve())] if real in job_of]
        if jobs:
            write_record(run_root(plan), jobs)
            out[member.name] = jobs
    return out
