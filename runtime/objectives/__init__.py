"""One module per objective, named as the objective (= the stage kind, except pretrain and finetune, which
share flow_matching). Importing this package imports every module in it, which registers them
(base.py: OBJECTIVES, COSTS): a new objective is a new file here, nothing else to list."""
import importlib
import pkgutil

from .base import COSTS, OBJECTIVES, Cost, Objective, register_cost, register_objective
from .custom import cost_of, objective_class

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["COSTS", "OBJECTIVES", "Cost", "Objective", "cost_of", "objective_class", "register_cost",
           "register_objective"]
