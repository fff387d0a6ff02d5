"""Passes `select` and `resolve`: the stages to run, and each of their ops bound to the runtime.

The compiler imports no runtime code: the caller hands `resolve` a function (the runtime's op
registry) that says, for one op, why it cannot run (None when it can). `flowspec run` refuses a
plan with such an op before anything is built, at the line the op comes from; `flowspec plan`
shows them.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

from .errors import Issue, Location, SpecError, did_you_mean
from .plan import OpNode, Plan, StagePlan

Resolver = Callable[[Plan, StagePlan, OpNode], "str | None"]


def select_stages(plan: Plan, names: Sequence[str] | None) -> Plan:
    """The named stages and every stage they read (transitively), in plan order; all stages if none named."""
    if not names:
        return plan
    known = [s.name for s in plan.stages]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SpecError([Issue(Location(plan.source), "--stage", f"no stage named '{n}'{did_you_mean(n, known)} "
                               f"(stages: {', '.join(known)})") for n in unknown])
    wanted = set(names)
    for stage in reversed(plan.stages):
        if stage.name in wanted:
            wanted.update(stage.upstream.values())
    return dataclasses.replace(plan, stages=tuple(s for s in plan.stages if s.name in wanted))


def resolve(plan: Plan, resolver: Resolver) -> Plan:
    """Every op of every stage looked up; an op the runtime cannot run carries the reason in `missing`."""
    for stage in plan.stages:
        ops = tuple(dataclasses.replace(op, missing=resolver(plan, stage, op)) for op in stage.ops)
        plan = plan.replace_stage(dataclasses.replace(stage, ops=ops))
    return dataclasses.replace(plan, resolved=True)


def refusals(plan: Plan) -> list[Issue]:
    """One positioned error per op that cannot run."""
    return [Issue(Location.parse(op.loc), f"stages.{stage.name}", f"{op.op}: {op.missing}")
            for stage in plan.stages for op in stage.ops if op.missing]
