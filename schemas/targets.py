"""User code named in a spec as 'package.module:Name' (custom stage kinds, rewards, enhancers).

The module is looked up beside the spec file first, then in the working directory, then on the
usual import path, so a spec and its plug-in can live in one folder and run from anywhere.
"""
from __future__ import annotations

import importlib
import os
import sys
from typing import Any, Sequence

TARGET_PATTERN = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"


def search_path(spec_dir: str | None) -> list[str]:
    return [os.path.abspath(d) for d in (spec_dir, os.getcwd()) if d]


def load_target(target: str, search: Sequence[str] = ()) -> Any:
    """The object `target` names; ValueError (with the reason) when it cannot be imported or found."""
    module_name, _, attribute = target.partition(":")
    for folder in reversed(search):
        # Kept on the path: the plug-in may import its own sibling modules later, lazily.
        if folder not in sys.path:
            sys.path.insert(0, folder)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any failure inside user code is reported, not raised
        where = ", ".join(search) or "the import path"
        raise ValueError(f"cannot import module '{module_name}' (looked in {where} and the import path): "
                         f"{type(exc).__name__}: {exc}") from None
    if not hasattr(module, attribute):
        raise ValueError(f"module '{module_name}' ({getattr(module, '__file__', '?')}) has no '{attribute}'")
    return getattr(module, attribute)
