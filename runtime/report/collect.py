"""Reading a run folder for its report: which stage folders make up the latest run, and what each holds.

Nothing here imports torch: a report is written on any machine that can see the run folder.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

from ..train.logs import METRICS

IDENTITY = "spec.json"  # written when a stage starts (runtime/train/checkpoint.py), so every stage folder has one
ESTIMATE = "estimate.json"  # the plan's estimate, written beside it when a stage starts (runtime/executors/stage.py)
SWEEP_MANIFEST = "sweep.json"
WHAT_A_RUN_HOLDS = ("a run folder is <output_dir>/<name>/ as `flowspec run` writes it: one STAGE-HASH/ folder per "
                    "stage, each with spec.json (or a sweep folder with sweep.json)")


class NotARun(ValueError):
    """The folder given to `flowspec report` holds no run (a user error, one line)."""


@dataclass
class Stage:
    """What one stage folder holds, read once; a file that is missing reads as empty."""

    folder: Path
    name: str
    hash: str
    identity: dict
    started: float
    done: bool
    results: dict = field(default_factory=dict)
    eval: dict = field(default_factory=dict)
    metrics: list[dict] = field(default_factory=list)
    resolved: dict | None = None
    samples: list[Path] = field(default_factory=list)
    distill_md: str | None = None
    estimate: dict = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.results.get("kind") or self.identity.get("stage", {}).get("kind", "?")

    @property
    def steps(self) -> int | None:
        return self.results.get("steps") or self.identity.get("stage", {}).get("steps")

    @property
    def last_step(self) -> int | None:
        return self.metrics[-1].get("step") if self.metrics else None

    @property
    def final_loss(self) -> float | None:
        losses = [r["loss"] for r in self.metrics if isinstance(r.get("loss"), (int, float))]
        return losses[-1] if losses else None

    @property
    def seconds(self) -> float | None:
        return self.results.get("seconds")

    @property
    def upstream(self) -> dict[str, str]:
        return self.identity.get("upstream") or {}


def _json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # missing, or cut short by a stage that was killed while writing
        return None


def stage_name(folder: Path) -> str:
    return folder.name.rsplit("-", 1)[0]  # folders are <stage>-<first 12 hex digits of the hash>


def stage_folders(run_dir: Path) -> list[Path]:
    return [p for p in run_dir.glob("*-*") if p.is_dir() and (p / IDENTITY).exists()]


def latest_stages(run_dir: Path) -> tuple[list[Path], list[Path]]:
    """(the stage folders of the latest run, in the order they started; the other stage folders there).

    The latest run is the newest folder of each stage name, except where a newer stage's spec.json names
    the upstream hash it read: that folder is the one its run used, even if an older spec's run of the
    upstream stage started since."""
    folders = stage_folders(run_dir)
    started = {p: (p / IDENTITY).stat().st_mtime for p in folders}
    by_hash = {p.name.rsplit("-", 1)[1]: p for p in folders}
    chosen: dict[str, Path] = {}
    for folder in sorted(folders, key=started.get):
        chosen[stage_name(folder)] = folder
    pinned: set[str] = set()
    for name in sorted(chosen, key=lambda n: started[chosen[n]], reverse=True):  # downstream stages first
        for digest in ((_json(chosen[name] / IDENTITY) or {}).get("upstream") or {}).values():
            read = by_hash.get(str(digest)[:12])
            if read is not None and stage_name(read) not in pinned:
                chosen[stage_name(read)] = read
                pinned.add(stage_name(read))
    latest = sorted(chosen.values(), key=started.get)
    return latest, sorted(set(folders) - set(latest), key=lambda p: p.name)


def read_stage(folder: Path) -> Stage:
    identity = _json(folder / IDENTITY) or {}
    results = _json(folder / "results.json") or {}
    metrics = []
    if (folder / METRICS).exists():
        for line in (folder / METRICS).read_text(errors="replace").splitlines():
            try:
                metrics.append(json.loads(line))
            except ValueError:  # a line cut short by a killed process: the rest still tells the story
                continue
    distill = folder / "distill_report.md"
    return Stage(folder=folder, name=stage_name(folder), hash=identity.get("hash") or folder.name.rsplit("-", 1)[1],
                 identity=identity, started=(folder / IDENTITY).stat().st_mtime, done=(folder / "DONE").exists(),
                 results=results, eval=_json(folder / "eval.json") or results.get("eval") or {},
                 metrics=metrics, resolved=_json(folder / "resolved.json"),
                 samples=sorted((folder / "samples").glob("step-*.png")),
                 distill_md=distill.read_text() if distill.exists() else None,
                 estimate=_json(folder / ESTIMATE) or {})


def check_run(run_dir: Path) -> None:
    """Raises NotARun, naming the folder and what a run folder holds, unless there is a run or sweep there."""
    if not run_dir.exists():
        raise NotARun(f"{run_dir} does not exist; {WHAT_A_RUN_HOLDS}")
    if not run_dir.is_dir():
        raise NotARun(f"{run_dir} is not a folder; {WHAT_A_RUN_HOLDS}")
    if not (run_dir / SWEEP_MANIFEST).exists() and not stage_folders(run_dir):
        raise NotARun(f"{run_dir} holds no stage folders; {WHAT_A_RUN_HOLDS}")


def parameter_counts(folder: Path) -> dict[str, int]:
    """Parameters of each exported model part (model/denoiser, model/text_encoder, a LoRA...), read from the
    safetensors headers alone: exact, and no weights are loaded."""
    counts: dict[str, int] = {}
    for path in sorted((folder / "model").glob("**/*.safetensors")):
        part = path.parent.relative_to(folder / "model").as_posix()
        if part == ".":
            part = path.stem
        try:
            counts[part] = counts.get(part, 0) + _safetensors_numel(path)
        except (OSError, ValueError, struct.error):
            continue
    return counts


def _safetensors_numel(path: Path) -> int:
    with open(path, "rb") as handle:
        (size,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(size))
    total = 0
    for name, entry in header.items():
        if name != "__metadata__":
            numel = 1
            for dim in entry["shape"]:
                numel *= dim
            total += numel
    return total


def flat(tree, prefix: str = "") -> dict[str, object]:
    """Nested results as dotted keys ({"reward": {"mean": 1}} -> {"reward.mean": 1}); lists stay values."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, object] = {}
    for key, value in tree.items():
        out.update(flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out
