"""Checkpoints written atomically (temp file + rename) holding everything an exact resume needs."""
from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINTS = "checkpoints"
IDENTITY = "spec.json"  # what determines this run's weights; compared on resume


def checkpoint_dir(run_dir: Path) -> Path:
    return run_dir / CHECKPOINTS


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Finished checkpoint files, oldest first (a leftover *.tmp from a kill mid-write is ignored)."""
    folder = checkpoint_dir(run_dir)
    return sorted(folder.glob("step-*.pt")) if folder.is_dir() else []


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_save(obj: Any, path: Path) -> None:
    """Write to a temp file in the same folder, fsync, then rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        torch.save(obj, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def save_checkpoint(run_dir: Path, step: int, state: dict, keep: int) -> Path:
    path = checkpoint_dir(run_dir) / f"step-{step:08d}.pt"
    atomic_save(state, path)
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink()
    return path


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict:
    # Our own files, holding Python and numpy RNG states: not weights-only.
    return torch.load(path, map_location=device, weights_only=False)


def capture_rng() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def write_identity(run_dir: Path, identity: dict) -> None:
    write_json(run_dir / IDENTITY, identity)


def write_json(path: Path, data: Any) -> None:
    """JSON through a temp file and a rename: a reader (the report, `status`) never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


def read_identity(run_dir: Path) -> dict | None:
    path = run_dir / IDENTITY
    return json.loads(path.read_text()) if path.exists() else None


def flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flat(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: tree}


def spec_differences(old: dict, new: dict) -> list[str]:
    """'key (old -> new)' for every leaf that differs between two resolved stage specs."""
    a, b = flat(old), flat(new)
    missing = object()
    return [f"{key} ({a.get(key, missing) if key in a else 'unset'} -> {b.get(key) if key in b else 'unset'})"
            for key in sorted(set(a) | set(b)) if a.get(key, missing) != b.get(key, missing)]
