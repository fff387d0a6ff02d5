"""The runtime's operators: one per op name a compiled plan can hold (compiler/lower.py and each stage
kind's `extra_ops`). The executor runs a stage's ops in plan order on one StageContext (context.py).

An op registered with `main_only=True` runs on rank 0 alone (samples, evaluation, export); the others
run on every rank. `resolve` tells the compiler's `resolve` pass why an op cannot run (None if it can),
so a plan holding one is refused at the op's line before anything is built.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .context import StageContext


@dataclass(frozen=True)
class Operator:
    name: str
    run: Callable[[StageContext, dict], None]
    main_only: bool = False


OPS: dict[str, Operator] = {}


def op(name: str, main_only: bool = False):
    """Decorator: `fn(ctx, params)` performs op `name`."""
    def bind(fn):
        assert name not in OPS, f"op '{name}' registered twice"
        OPS[name] = Operator(name, fn, main_only)
        return fn
    return bind


def resolve(plan, stage_plan, node) -> str | None:
    """Why `node` cannot run in this version of flowspec, or None when it can."""
    if node.op not in OPS:
        return f"no runtime for op '{node.op}' in this version of flowspec (runnable ops: {', '.join(sorted(OPS))})"
    if node.op == "train":
        from ..objectives import objective_class

        try:
            objective_class(node.params["objective"], spec_dir(plan))
        except ValueError as exc:
            return str(exc)
    return None


def spec_dir(plan) -> str:
    return str(Path(plan.source).resolve().parent)


# Every module of this package registers its ops: a new op is a new file here, nothing else to list.
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["OPS", "Operator", "StageContext", "op", "resolve", "spec_dir"]
