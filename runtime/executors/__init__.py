"""Executors run a Plan's stages: on this machine (local, one or `--nproc` processes) or as SLURM jobs."""
from __future__ import annotations

from ...compiler import Issue, Location, SpecError
from ...compiler.plan import Plan


def runnable_kinds() -> dict[str, type]:
    from ..stages import STAGE_RUNNERS

    return STAGE_RUNNERS


def select_stages(plan: Plan, names: list[str] | None) -> Plan:
    """The named stages and every stage they read (transitively), in plan order; all stages if none named."""
    if not names:
        return plan
    known = [s.name for s in plan.stages]
    unknown = [n for n in names if n not in known]
    if unknown:
        from ...compiler.errors import did_you_mean

        raise SpecError([Issue(Location(plan.source), "--stage", f"no stage named '{n}'{did_you_mean(n, known)} "
                               f"(stages: {', '.join(known)})") for n in unknown])
    wanted = set(names)
    for stage in reversed(plan.stages):
        if stage.name in wanted:
            wanted.update(stage.upstream.values())
    import dataclasses

    return dataclasses.replace(plan, stages=tuple(s for s in plan.stages if s.name in wanted))


def unsupported_stages(plan: Plan) -> list[Issue]:
    """A spec with a stage kind (or option) that has no runtime yet is refused before any stage runs."""
    runners = runnable_kinds()
    runnable = ", ".join(sorted(runners))
    issues = [Issue(Location(stage.loc), f"stages.{stage.name}.kind",
                    f"stage kind '{stage.kind}' has no runtime in this version of flowspec (runnable kinds: {runnable});"
                    " `flowspec validate` and `flowspec plan` support every kind")
              for stage in plan.stages if stage.kind not in runners]
    selected = {s.name for s in plan.stages}
    for stage in plan.spec.stages:
        if stage.name not in selected:
            continue
        if stage.lora is not None:
            issues.append(Issue(Location(plan.stage(stage.name).loc), f"stages.{stage.name}.lora",
                                "LoRA training has no runtime in this version of flowspec yet"))
    return issues


def executor_kind(plan: Plan, requested: str | None) -> str:
    """`--executor` if given, else the stages' own `executor.kind` (which must agree)."""
    if requested:
        return requested
    kinds = {s.executor.kind for s in plan.spec.stages if s.name in {p.name for p in plan.stages}}
    if len(kinds) > 1:
        raise SpecError([Issue(Location(plan.source), "executor", "some stages run locally and some on SLURM: "
                               "pass --executor local or --executor slurm to run them one way")])
    return kinds.pop() if kinds else "local"


def preflight(plan: Plan, fresh: bool, world: int | None) -> None:
    """What would fail in every process (or job) is refused here, once, before anything starts."""
    import torch

    from ...compiler.lower import cache_status
    from ..distributed import Distributed
    from .slurm import slurm_block

    runners = runnable_kinds()
    for stage_plan in plan.stages:
        if cache_status(stage_plan.run_dir) == "hit":
            continue
        size = world or slurm_block(plan, stage_plan.name).num_devices()  # a job's tasks
        runner = runners[stage_plan.kind](plan, stage_plan, torch.device("cpu"), fresh, Distributed(world=size))
        runner.check_drift()
        runner.check_not_running()
        runner.split_batch()


def run_plan(plan: Plan, fresh: bool = False, stages: list[str] | None = None, executor: str | None = None,
             nproc: int | None = None, wait: bool = False) -> int:
    plan = select_stages(plan, stages)
    issues = unsupported_stages(plan)
    if issues:
        raise SpecError(issues)
    kind = executor_kind(plan, executor)
    if kind == "slurm":
        if nproc:
            raise SpecError([Issue(Location(plan.source), "--nproc", "--nproc is for local runs; on SLURM the "
                                   "processes are executor.nodes x executor.gpus_per_node tasks")])
        from .follow import wait as follow
        from .slurm import refuse_live_jobs, submit_plan

        refuse_live_jobs(plan)
        preflight(plan, fresh, None)
        submitted = submit_plan(plan, fresh)
        return follow(submitted) if wait and submitted else 0
    from .local import run_local

    world = nproc or max((s.executor.num_devices() for s in plan.spec.stages
                          if s.executor.kind == "local" and s.name in {p.name for p in plan.stages}), default=1)
    preflight(plan, fresh, world)
    return run_local(plan, fresh, world)
