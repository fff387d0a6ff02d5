"""Looking up a stage's objective: a registered name, or a custom kind's class named by its target."""
from __future__ import annotations

from ...schemas.targets import load_target, search_path
from .base import COSTS, OBJECTIVES, Cost, Objective


def is_target(name: str) -> bool:
    return ":" in name  # 'package.module:Name' (registered names never hold a colon)


def objective_class(name: str, spec_dir: str | None = None) -> type[Objective]:
    """The class that runs objective `name`; ValueError saying why when there is none."""
    if not is_target(name):
        if name not in OBJECTIVES:
            raise ValueError(f"no runtime for objective '{name}' in this version of flowspec (runnable objectives: "
                             f"{', '.join(sorted(OBJECTIVES))}, or a custom stage's class)")
        return OBJECTIVES[name]
    cls = load_target(name, search_path(spec_dir))
    if not (isinstance(cls, type) and issubclass(cls, Objective)):
        raise ValueError(f"'{name}' is not a subclass of flowspec.runtime.objectives.Objective (subclass it, or "
                         "flowspec.runtime.objectives.flow_matching.FlowMatching, to run on the shared loop)")
    return cls


def cost_of(stage, spec_dir: str | None = None) -> Cost:
    """The stage's cost model: its objective's, registered or (custom kinds) the target class's own."""
    name = stage.objective_name()
    if not is_target(name):
        return COSTS[name](stage, None)
    cls = objective_class(name, spec_dir)
    options = cls.Options.model_validate(stage.objective_options()) if cls.Options is not None else None
    return cls.cost(stage, options)
