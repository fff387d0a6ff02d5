"""Executors run a Plan's stages: in this process (local) or as SLURM jobs."""
from __future__ import annotations

from ...compiler import Issue, Location, SpecError
from ...compiler.plan import Plan

# stage kind -> the runtime class that runs it; filled as stage runtimes land (runtime/stages).
STAGE_RUNNERS: dict[str, type] = {}


def unsupported_stages(plan: Plan) -> list[Issue]:
    """A spec with a stage kind that has no runtime yet is refused before any stage runs."""
    runnable = ", ".join(sorted(STAGE_RUNNERS)) or "none yet"
    return [Issue(Location(stage.loc), f"stages.{stage.name}.kind",
                  f"stage kind '{stage.kind}' has no runtime in this version of flowspec (runnable kinds: {runnable});"
                  " `flowspec validate` and `flowspec plan` support every kind")
            for stage in plan.stages if stage.kind not in STAGE_RUNNERS]


def run_plan(plan: Plan) -> int:
    issues = unsupported_stages(plan)
    if issues:
        raise SpecError(issues)
    raise NotImplementedError  # the local executor lands with the runtime core
