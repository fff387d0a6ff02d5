"""The compiled plan: ordered stages, each a list of operator nodes, with hashes and estimates."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..schemas import Spec
from .errors import Issue


@dataclass(frozen=True)
class OpNode:
    """One runtime operator: `op` names it in the runtime registry; `loc` is the spec line it came from.
    `missing` says why the runtime has no implementation for it (filled by the `resolve` pass)."""

    op: str
    params: dict[str, Any]
    loc: str
    missing: str | None = None


@dataclass(frozen=True)
class Estimate:
    """What a stage costs on the declared hardware (filled by `flowspec plan`, which may import torch)."""

    params_total: int
    params_trainable: int
    train_flops: float
    memory_gib: float  # per device, peak
    gpu_hours: float
    accelerator: str
    devices: int
    step_seconds: float
    params_text_encoder: int = 0  # included in params_total (and trainable): the builtin encoder trains along
    notes: tuple[str, ...] = ()
    checkpointed: tuple[str, ...] = ()  # the denoiser's regions that recompute their activations


@dataclass(frozen=True)
class StagePlan:
    name: str
    kind: str
    from_: str | None
    upstream: dict[str, str]  # field -> stage name
    steps: int
    seed: int
    hash: str
    run_dir: str
    loc: str
    ops: tuple[OpNode, ...]
    executor_loc: str = ""  # where the stage's executor kind is written (its own block's, or the root's)
    cache: str = "miss"  # hit: finished artifact; resume: checkpoints exist; miss
    estimate: Estimate | None = None
    data_report: tuple[dict, ...] = ()  # per curriculum phase: buckets, images, repeats, drops (filled by `plan`)


@dataclass(frozen=True)
class Plan:
    name: str
    source: str
    profile: str | None
    overrides: tuple[str, ...]
    version: str
    spec: Spec
    stages: tuple[StagePlan, ...]
    warnings: tuple[Issue, ...] = field(default=())
    resolved: bool = False  # every op was looked up in the runtime's registry (the `resolve` pass ran)
    # Each stage's executor block as the spec declares it, where `--executor` switched its kind (a local
    # run of a stage the spec sized for a cluster says so); a stage not named here runs as it declares.
    declared: dict[str, Any] = field(default_factory=dict)

    def stage(self, name: str) -> StagePlan:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)

    def model_spec(self):
        """spec.model with model.latent.path set to the folder its autoencoder stage exports (model.latent.from),
        which is what builds the model: the spec itself keeps `from` alone, so that a dumped spec compiles back to
        the same hashes (a stage's hash holds the autoencoder stage's hash, not this path)."""
        model = self.spec.model
        latent = model.latent
        if latent.kind != "vae" or latent.from_ is None or latent.from_ not in {s.name for s in self.stages}:
            return model
        folder = Path(self.stage(latent.from_).run_dir).resolve() / "model"
        return model.model_copy(update={"latent": latent.model_copy(update={"path": str(folder)})})

    def spec_stage(self, name: str):
        """The stage's block of the spec (schemas/stages/), fully resolved."""
        for stage in self.spec.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)

    def declared_executor(self, name: str):
        """The stage's executor as its spec declares it, before `--executor` switched its kind."""
        return self.declared.get(name) or self.spec_stage(name).executor

    def replace_stage(self, new: StagePlan) -> "Plan":
        stages = tuple(new if s.name == new.name else s for s in self.stages)
        return dataclasses.replace(self, stages=stages)

    def to_json(self) -> dict[str, Any]:
        out = {
            "name": self.name, "source": self.source, "profile": self.profile, "overrides": list(self.overrides),
            "flowspec_version": self.version,
            "stages": [_stage_json(s) for s in self.stages],
            "warnings": [str(w) for w in self.warnings],
            "resolved": self.resolved,
            "declared": {name: block.model_dump(mode="json") for name, block in self.declared.items()},
            "spec": self.spec.model_dump(mode="json", by_alias=True),
        }
        json.dumps(out)  # internal invariant: the plan is JSON-serialisable
        return out

    def as_text(self) -> str:
        from .render import render_plan

        return render_plan(self)


def _stage_json(stage: StagePlan) -> dict[str, Any]:
    out = dataclasses.asdict(stage)
    out["from"] = out.pop("from_")
    return out
