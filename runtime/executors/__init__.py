"""Executors run a Plan's stages: in this process (local) or as SLURM jobs (later)."""
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


def run_plan(plan: Plan, fresh: bool = False, stages: list[str] | None = None) -> int:
    plan = select_stages(plan, stages)
    issues = unsupported_stages(plan)
    if issues:
        raise SpecError(issues)
    selected = {s.name for s in plan.stages}
    if any(s.executor.kind != "local" for s in plan.spec.stages if s.name in selected):
        raise SpecError([Issue(Location(plan.source), "executor", "the slurm executor has no runtime in this "
                               "version of flowspec yet; run with --profile smoke or set executor.kind: local")])
    from .local import run_local

    return run_local(plan, fresh)
