"""Executors run a Plan's stages: in this process (local) or as SLURM jobs (later)."""
from __future__ import annotations

from ...compiler import Issue, Location, SpecError
from ...compiler.plan import Plan


def runnable_kinds() -> dict[str, type]:
    from ..stages import STAGE_RUNNERS

    return STAGE_RUNNERS


def unsupported_stages(plan: Plan) -> list[Issue]:
    """A spec with a stage kind (or option) that has no runtime yet is refused before any stage runs."""
    runners = runnable_kinds()
    runnable = ", ".join(sorted(runners))
    issues = [Issue(Location(stage.loc), f"stages.{stage.name}.kind",
                    f"stage kind '{stage.kind}' has no runtime in this version of flowspec (runnable kinds: {runnable});"
                    " `flowspec validate` and `flowspec plan` support every kind")
              for stage in plan.stages if stage.kind not in runners]
    for stage in plan.spec.stages:
        if stage.lora is not None:
            issues.append(Issue(Location(plan.stage(stage.name).loc), f"stages.{stage.name}.lora",
                                "LoRA training has no runtime in this version of flowspec yet"))
        if getattr(stage, "aux_losses", None):
            issues.append(Issue(Location(plan.stage(stage.name).loc), f"stages.{stage.name}.aux_losses",
                                "REPA has no runtime in this version of flowspec yet"))
    return issues


def run_plan(plan: Plan, fresh: bool = False) -> int:
    issues = unsupported_stages(plan)
    if issues:
        raise SpecError(issues)
    if plan.spec.executor.kind != "local" or any(s.executor.kind != "local" for s in plan.spec.stages):
        raise SpecError([Issue(Location(plan.source), "executor", "the slurm executor has no runtime in this "
                               "version of flowspec yet; run with --profile smoke or set executor.kind: local")])
    from .local import run_local

    return run_local(plan, fresh)
