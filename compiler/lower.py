"""Pass `lower`: each stage becomes operator nodes, a seed and a content hash."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterator

from .. import __version__
from ..schemas import Spec
from .errors import Location
from .locate import locate
from .plan import OpNode, StagePlan
from .yamlpos import PosDict

# Settings that cannot change the trained weights stay out of the hash, so changing them reuses artifacts.
HASH_EXCLUDED: dict[str, Any] = {"name": True, "executor": True, "data": {"cache": True, "loader": True},
                                 "train": {"checkpoint": True, "samples": True, "log_every": True}}
DONE_MARKER = "DONE"

# The training objective each kind runs inside the shared training loop.
OBJECTIVES = {
    "pretrain": "flow_matching", "finetune": "flow_matching", "dreambooth": "dreambooth",
    "reward_feedback": "refl", "flow_grpo": "grpo", "diffusion_dpo": "dpo",
    "progressive_distill": "progressive", "reflow": "flow_matching", "consistency_distill": "consistency",
    "adversarial_distill": "adversarial",
}


def derive_seed(root_seed: int, stage_name: str) -> int:
    digest = hashlib.sha256(f"{root_seed}:{stage_name}".encode()).hexdigest()
    return int(digest[:8], 16)


def upstream_of(stage) -> dict[str, str]:
    """{field: stage name or path} this stage reads; teacher and reference default to `from`."""
    refs = {"from": stage.from_}
    for field in ("teacher", "reference"):
        if field in type(stage).model_fields:
            refs[field] = getattr(stage, field) or stage.from_
    return {k: v for k, v in refs.items() if v is not None}


def stage_hash(resolved: dict[str, Any], index: int, seed: int, upstream: dict[str, str]) -> str:
    """Hash of what determines a stage's weights; `resolved` is the spec dumped without HASH_EXCLUDED."""
    payload = {
        "flowspec": __version__,
        "model": resolved["model"],
        "stage": resolved["stages"][index],
        "seed": seed,
        "upstream": upstream,
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def lower(spec: Spec, tree: PosDict, fallback: Location) -> tuple[StagePlan, ...]:
    hashes: dict[str, str] = {}
    plans = []
    # One dump through the Spec's serializer (dumping each stage alone would build a serializer per kind).
    resolved = spec.model_dump(mode="json", by_alias=True, exclude={"stages": {"__all__": HASH_EXCLUDED}})
    for i, stage in enumerate(spec.stages):
        seed = stage.seed if stage.seed is not None else derive_seed(spec.seed, stage.name)
        refs = upstream_of(stage)
        # A stage's identity includes what it reads: the upstream hash, or the path as written.
        upstream_ids = {f: hashes.get(ref, ref) for f, ref in refs.items()}
        digest = stage_hash(resolved, i, seed, upstream_ids)
        hashes[stage.name] = digest
        where = lambda *path: str(locate(tree, ("stages", i, *path), fallback))
        ops = tuple(OpNode(op, params, where(*path)) for op, params, path in _ops(spec, stage))
        plans.append(StagePlan(
            name=stage.name, kind=stage.kind, from_=stage.from_,
            upstream={f: r for f, r in refs.items() if "/" not in r},
            steps=stage.steps, seed=seed, hash=digest,
            run_dir=str(Path(spec.output_dir) / spec.name / f"{stage.name}-{digest[:12]}"),
            loc=where(), ops=ops))
    return tuple(plans)


def cache_status(run_dir: str) -> str:
    path = Path(run_dir)
    if (path / DONE_MARKER).exists():
        return "hit"
    if (path / "checkpoints").is_dir() and any((path / "checkpoints").iterdir()):
        return "resume"
    return "miss"


def _ops(spec: Spec, stage) -> Iterator[tuple[str, dict, tuple]]:
    refs = upstream_of(stage)
    start = refs.get("from")
    yield "load_model", {"family": spec.model.kind, "preset": spec.model.preset,
                         "weights": f"stage:{start}" if start and "/" not in start else (start or spec.model.init.path or "init")}, ("from",) if start else ()
    if stage.lora is not None:
        yield "attach_lora", {"rank": stage.lora.rank, "alpha": stage.lora.resolved_alpha()}, ("lora",)
    for field in ("teacher", "reference"):
        if field in refs:
            yield f"load_{field}", {"weights": refs[field]}, (field,)
    yield "data", {"source": stage.data.source.kind, "phases": len(stage.data.curriculum)}, ("data",)
    yield from _kind_ops(stage)
    aux = [extra.kind for extra in getattr(stage, "aux_losses", ())]
    yield "train", {"objective": OBJECTIVES[stage.kind], "aux_losses": aux, "steps": stage.steps}, ("kind",)
    yield "sample", {"prompts": len(stage.train.samples.prompts)}, ("train",)
    yield "export", {"lora": stage.lora is not None}, ()


def _kind_ops(stage) -> Iterator[tuple[str, dict, tuple]]:
    for extra in getattr(stage, "aux_losses", ()):
        yield "vision_encoder", {"encoder": extra.encoder.kind, "for": extra.kind}, ("aux_losses",)
    if stage.kind == "dreambooth" and stage.prior is not None:
        yield "generate_prior", {"num_images": stage.prior.num_images}, ("prior",)
    if hasattr(stage, "reward"):
        yield "reward", {"reward": stage.reward.kind}, ("reward",)
    if stage.kind == "diffusion_dpo":
        yield "pairs", {"pairs": stage.pairs.kind}, ("pairs",)
    if stage.kind == "reflow":
        yield "generate_pairs", {"num_pairs": stage.num_pairs, "teacher_steps": stage.teacher_steps}, ("num_pairs",)
    if stage.kind == "adversarial_distill":
        yield "discriminator", {"encoder": stage.discriminator.encoder.kind}, ("discriminator",)
