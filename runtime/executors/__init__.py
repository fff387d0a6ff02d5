"""Executors run a Plan's stages: on this machine (local, one or `--nproc` processes) or as SLURM jobs."""
from __future__ import annotations

from ...compiler import Issue, Location, SpecError
from ...compiler.plan import Plan


def runnable(plan: Plan, stages: list[str] | None = None) -> Plan:
    """The selected stages with every op bound to the runtime; an op that cannot run is refused here, at its
    spec line, before any model is built (the compiler's `resolve` pass, with the runtime's registry)."""
    from ...compiler.resolve import refusals, resolve, select_stages
    from ..ops import resolve as resolver

    plan = select_stages(plan, stages)
    if not plan.resolved:
        plan = resolve(plan, resolver)
    issues = refusals(plan)
    if issues:
        raise SpecError(issues)
    return plan


def executor_kind(plan: Plan, requested: str | None) -> str:
    """The stages' `executor.kind` (which must agree). `--executor` is applied by the compiler
    (compile_spec(executor=...)), so each stage's block is one of that kind, with its own keys; a plan
    compiled for another kind is refused rather than run with default blocks."""
    kinds = {s.executor.kind for s in plan.spec.stages if s.name in {p.name for p in plan.stages}}
    if requested and kinds - {requested}:
        raise SpecError([Issue(Location(plan.source), "--executor", f"this plan was compiled for executor kind "
                               f"{', '.join(sorted(kinds))}, not '{requested}': compile it with "
                               f"compile_spec(..., executor='{requested}')")])
    if len(kinds) > 1:
        raise SpecError([Issue(Location(plan.source), "executor", "some stages run locally and some on SLURM: "
                               "pass --executor local or --executor slurm to run them one way")])
    return kinds.pop() if kinds else requested or "local"


def machine_issues(spec: str, profile: str | None, sets, stages, executor: str | None) -> list[Issue]:
    """Where a spec's run is refused for what this version cannot run yet: whether it would also be refused
    for this machine (SLURM asked for and unreachable), so one report names both. [] if the spec itself
    does not compile."""
    from ...compiler import compile_spec
    from .reach import SlurmUnavailable
    from .slurm import require_slurm

    try:
        plan = compile_spec(spec, profile, sets, stages=stages, executor=executor)
        if executor_kind(plan, executor) == "slurm":
            require_slurm(plan, executor)
    except SlurmUnavailable as exc:
        return list(exc.issues)
    except SpecError:
        pass
    return []


def preflight(plan: Plan, fresh: bool, world: int | None) -> None:
    """What would fail in every process (or job) is refused here, once, before anything starts."""
    import torch

    from ...compiler.lower import cache_status
    from ..distributed import Distributed
    from ..estimate import check_instances
    from .slurm import slurm_block
    from .stage import StageRun

    for stage_plan in plan.stages:
        if cache_status(stage_plan.run_dir) == "hit":
            continue
        size = world or slurm_block(plan, stage_plan.name).num_devices()  # a job's tasks
        runner = StageRun(plan, stage_plan, torch.device("cpu"), fresh, Distributed(world=size))
        runner.check_drift()
        runner.check_not_running()
        runner.split_batch()
        check_instances(plan, stage_plan)  # a subject folder's problems, before any stage of the chain trains


def run_plan(plan: Plan, fresh: bool = False, stages: list[str] | None = None, executor: str | None = None,
             nproc: int | None = None, wait: bool = False, yes: bool = False) -> int:
    from ..estimate import with_estimates

    plan = runnable(plan, stages)
    kind = executor_kind(plan, executor)
    if kind == "slurm":
        if nproc:
            raise SpecError([Issue(Location(plan.source), "--nproc", "--nproc is for local runs; on SLURM the "
                                   "processes are executor.nodes x executor.gpus_per_node tasks")])
        from .follow import wait as follow
        from .slurm import asked_for, refuse_live_jobs, require_slurm, submit_plan

        require_slurm(plan, executor)
        with asked_for(plan, executor):
            refuse_live_jobs(plan)
        plan = with_estimates(plan)  # after the refusals that need none; each job writes its stage's for the report
        preflight(plan, fresh, None)
        submitted = submit_plan(plan, fresh)
        if not wait:
            return 0
        code = follow(submitted) if submitted else 0
        report(plan)  # the jobs have ended: their folders are on the file system this machine shares with them
        return code
    from .local import run_local

    world = nproc or max((s.executor.num_devices() for s in plan.spec.stages
                          if s.executor.kind == "local" and s.name in {p.name for p in plan.stages}), default=1)
    from .sizing import check_size

    plan = with_estimates(plan)  # each stage folder keeps its estimate for the report
    check_size(plan, world, yes)  # before anything is built: a stage sized for a cluster says so, and asks
    preflight(plan, fresh, world)
    code = run_local(plan, fresh, world)
    report(plan)
    return code


def report(plan: Plan) -> None:
    """Writes the run's HTML report (runtime/report/html.py) and prints its path, the run's last line."""
    from pathlib import Path

    from ..report.html import report_after_run

    report_after_run(Path(plan.spec.output_dir) / plan.spec.name, [Path(s.run_dir) for s in plan.stages])
