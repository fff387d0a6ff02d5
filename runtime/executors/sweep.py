"""Running a sweep (compiler/sweep.py) and following it: `flowspec run SPEC --sweep ...`, `flowspec status
<output_dir>/<name>-sweep`.

Locally the members run one after the other; on SLURM each stage is one job array over the members that
need it (runtime/executors/sweep_slurm.py). Either way every member is checked before any starts, the
stages several members share are linked to the one folder that trains them, and the manifest is written
first, so `status` can follow the sweep from its first step.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ...compiler import Issue, Location, SpecError
from ...compiler.lower import DONE_MARKER
from ...compiler.sweep import MANIFEST, SWEEP_SUFFIX, Sweep, expand, manifest

USER_ERROR = 2


def run_sweep_command(args) -> int:
    """`flowspec run SPEC --sweep ...`: every member compiled and resolved (SpecError names the members that
    fail, with what else is in the way on this machine), then run."""
    from ...compiler.validate import position
    from ..ops import resolve
    from . import machine_issues

    if args.nproc is not None and args.nproc < 1:
        print("flowspec run: --nproc must be at least 1", file=sys.stderr)
        return USER_ERROR
    try:
        sweep = expand(args.spec, args.profile, args.sets, args.sweep, stages=args.stage, resolver=resolve,
                       runnable=True, executor=args.executor)
    except SpecError as exc:
        found = [*exc.issues, *machine_issues(args.spec, args.profile, args.sets, args.stage, args.executor)]
        raise SpecError(sorted(found, key=position)) from None
    return run_sweep(sweep, fresh=args.fresh, executor=args.executor, nproc=args.nproc, wait=args.wait, yes=args.yes)


def run_sweep(sweep: Sweep, fresh: bool = False, executor: str | None = None, nproc: int | None = None,
              wait: bool = False, yes: bool = False) -> int:
    from ..report.html import report_after_sweep
    from ..estimate import with_estimates
    from . import executor_kind, preflight, report, runnable

    plans = [with_estimates(runnable(member.plan)) for member in sweep.members]
    kinds = {executor_kind(plan, executor) for plan in plans}
    if len(kinds) > 1:  # members differing only in their executor are refused as duplicates; this is the rest
        raise SpecError([Issue(Location(sweep.spec), "executor", "the sweep's runs would use different executors: "
                               "pass --executor local or --executor slurm to run them one way")])
    if kinds == {"slurm"}:
        from .sweep_slurm import submit_sweep

        return submit_sweep(sweep, plans, fresh, executor, wait)
    from .local import run_local
    from .sizing import check_size

    world = nproc or max((s.executor.num_devices() for plan in plans for s in plan.spec.stages
                          if s.executor.kind == "local"), default=1)
    for plan in plans:
        check_size(plan, world, yes)
    link(sweep)
    for plan in plans:  # what would refuse any member is refused before the first one starts
        preflight(plan, fresh, world)
    write_manifest(sweep)
    failed: dict[str, str] = {}  # a stage folder that did not finish -> the member that ran it
    for i, (member, plan) in enumerate(zip(sweep.members, plans)):
        blocked = [failed[_real(s.run_dir)] for s in plan.stages if _real(s.run_dir) in failed]
        if blocked:
            print(f"== {member.name}: skipped, a stage it shares failed in {blocked[0]}", flush=True)
            continue
        values = ", ".join(f"{key}={value}" for key, value in member.overrides.items())
        print(f"== sweep run {i + 1}/{len(plans)}: {member.name} ({values})", flush=True)
        if run_local(plan, fresh, world):
            failed.update({_real(s.run_dir): member.name for s in plan.stages
                           if not (Path(s.run_dir) / DONE_MARKER).exists()})
        report(plan)
    print(f"sweep {sweep.name}: {len(plans) - len(set(failed.values()))} of {len(plans)} runs finished; "
          f"`flowspec status {sweep.folder}` compares them", flush=True)
    report_after_sweep(sweep.folder)
    return 1 if failed else 0


def _real(path: str) -> str:
    return os.path.realpath(path)


def link(sweep: Sweep) -> None:
    """Each member's folder of a stage another folder trains becomes a (relative) link to that folder, which
    is made now so that no link ever dangles; a member's own real folder is never replaced."""
    for path, owner in sweep.links.items():
        Path(owner).mkdir(parents=True, exist_ok=True)
        here = Path(path)
        target = os.path.relpath(owner, here.parent)
        if here.is_symlink():
            if os.readlink(here) == target:
                continue
            here.unlink()
        elif here.exists():
            continue
        here.parent.mkdir(parents=True, exist_ok=True)
        here.symlink_to(target, target_is_directory=True)


def write_manifest(sweep: Sweep, extra: dict | None = None) -> Path:
    """<output_dir>/<name>-sweep/sweep.json, replaced atomically (a reader never sees half of it)."""
    sweep.folder.mkdir(parents=True, exist_ok=True)
    path = sweep.folder / MANIFEST
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**manifest(sweep), **(extra or {})}, indent=2))
    os.replace(tmp, path)
    return path


def is_sweep(folder: Path) -> bool:
    return (folder / MANIFEST).is_file()


def sweep_folder(spec_path: str, args: list[str]) -> Path:
    """`flowspec status SPEC --sweep ...`: the folder of the spec's sweep (its last one), checked to be that sweep."""
    from ...compiler import compile_spec
    from ...compiler.sweep import parse_axes

    plan = compile_spec(spec_path)
    folder = Path(plan.spec.output_dir) / f"{plan.spec.name}{SWEEP_SUFFIX}"
    asked = {axis.key: list(axis.values) for axis in parse_axes(args)}
    if not is_sweep(folder):
        raise SpecError([Issue(Location(spec_path), "", f"no sweep of this spec was run: {folder / MANIFEST} is "
                                                        "not there")])
    ran = json.loads((folder / MANIFEST).read_text())["axes"]
    if asked and asked != ran:
        swept = " ".join(f"--sweep {key}={','.join(values)}" for key, values in ran.items())
        raise SpecError([Issue(Location(spec_path), "", f"the last sweep of this spec was `{swept}`, not the one "
                                                        f"given; its manifest: {folder / MANIFEST}")])
    return folder


def sweep_status(folder: Path, follow: bool = False, stream=None) -> int:
    """One line per run (its values and folder), one per stage under it: its SLURM job and state, or its local
    state, step and loss; a stage another run trains says whose it is."""
    from .follow import asked_for, describe, job_states, wait
    from .reach import check

    stream = stream or sys.stdout
    data, runs, records = _records(folder)
    jobs = list({job.job_id: job for record in records.values() for job in record.values()}.values())
    states: dict[str, str] = {}
    if jobs:
        with asked_for(str(folder / MANIFEST)):
            check(("squeue", "sacct"), "run `flowspec status` on a login node of the cluster that runs these jobs "
                  "(their progress is also in each stage folder's metrics.jsonl)")
            if follow:
                return wait(_labelled(runs, records))
            states = job_states(jobs)
    axes = " x ".join(data["axes"])
    print(f"sweep of {data['spec']}: {len(runs)} runs over {axes}  [{folder / MANIFEST}]", file=stream)
    for run, root in runs:
        values = " ".join(f"{key}={value}" for key, value in run["overrides"].items())
        print(f"{run['name']}  {values}  {root}", file=stream)
        for stage, line in _stage_lines(run, root, records[run["name"]], states, describe):
            owner = run.get("shared", {}).get(stage)
            print(f"    {line}" + (f"  (shared: trained in {Path(owner).parent.name})" if owner else ""), file=stream)
    return 0


def sweep_cancel(folder: Path) -> int:
    """`flowspec cancel` on a sweep's folder: every job of its runs that has not ended, a shared stage's once."""
    from .follow import cancel_jobs

    _, runs, records = _records(folder)
    jobs = _labelled(runs, records)
    if not jobs:
        print(f"{folder}: no SLURM submission found (its runs ran here, one after the other)", file=sys.stderr)
        return 2
    return cancel_jobs(jobs, folder / MANIFEST)


def _records(folder: Path) -> tuple[dict, list[tuple[dict, Path]], dict[str, dict]]:
    """The manifest, each run with its folder, and each run's SLURM jobs by stage (its slurm.json)."""
    from .slurm import read_record

    data = json.loads((folder / MANIFEST).read_text())
    runs = [(run, Path(os.path.normpath(folder / run["folder"]))) for run in data["runs"]]
    return data, runs, {run["name"]: {job.stage: job for job in read_record(root)} for run, root in runs}


def _stage_lines(run: dict, root: Path, jobs: dict, states: dict, describe):
    from .follow import local_line

    stages = run.get("stages") or {p.name.rsplit("-", 1)[0]: p.name for p in sorted(root.glob("*-*"))}
    for stage, name in stages.items():
        if stage in jobs:
            yield stage, describe(jobs[stage], states[jobs[stage].job_id])
        elif (root / name / "spec.json").exists():
            yield stage, local_line(root / name)
        else:
            yield stage, f"[{stage}] not started  {root / name}"


def _labelled(runs, records) -> list:
    """Each job once, named by the run that trains it (`--wait` on a sweep)."""
    import dataclasses

    out = {}
    for run, _ in runs:
        for stage, job in records[run["name"]].items():
            if job.job_id not in out and stage not in run.get("shared", {}):
                out[job.job_id] = dataclasses.replace(job, stage=f"{run['name']}/{stage}")
    return list(out.values())
