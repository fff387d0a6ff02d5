"""Pass `lower`: each stage becomes operator nodes, a seed and a content hash."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterator

from .. import __version__
from ..schemas import Spec
from ..schemas.stages import OpSpec
from .errors import Location
from .locate import locate
from .plan import OpNode, StagePlan
from .yamlpos import PosDict

# Settings that cannot change the trained weights stay out of the hash, so changing them reuses artifacts
# (train.sharding, like the number of processes, changes them only by float reassociation: a stage resumes
# sharded what it began unsharded).
HASH_EXCLUDED: dict[str, Any] = {"name": True, "executor": True, "data": {"cache": True, "loader": True},
                                 "train": {"checkpoint": True, "samples": True, "log_every": True, "sharding": True,
                                                                     "offload_frozen": True}}
DONE_MARKER = "DONE"
# The built-in evaluation of a stage, by its data: exact metrics for 2-D data, the procedural checker for shapes.
EVALUATIONS = {"toy2d": "toy2d", "shapes": "shapes_checker"}


def derive_seed(root_seed: int, stage_name: str) -> int:
    digest = hashlib.sha256(f"{root_seed}:{stage_name}".encode()).hexdigest()
    return int(digest[:8], 16)


def stage_hash(resolved: dict[str, Any], index: int, seed: int, upstream: dict[str, str],
               contents: str | None = None, trains: str = "denoiser") -> str:
    """Hash of what determines a stage's weights; `resolved` is the spec dumped without HASH_EXCLUDED. An
    autoencoder stage's weights depend on the VAE's shape, not on the denoiser or its timesteps, so a change
    there reuses the trained VAE."""
    model, stage = resolved["model"], resolved["stages"][index]
    if trains == "vae":
        model = {"latent": {k: v for k, v in model["latent"].items() if k != "from"}}
        stage = {k: v for k, v in stage.items() if k != "timesteps"}
        stage["train"] = {k: v for k, v in stage["train"].items() if k != "cfg_dropout"}
    payload = {
        "flowspec": __version__,
        "model": model,
        "stage": stage,
        "seed": seed,
        "upstream": upstream,
    }
    if contents is not None:
        payload["contents"] = contents
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def lower(spec: Spec, tree: PosDict, fallback: Location) -> tuple[StagePlan, ...]:
    hashes: dict[str, str] = {}
    plans = []
    # One dump through the Spec's serializer (dumping each stage alone would build a serializer per kind).
    resolved = spec.model_dump(mode="json", by_alias=True, exclude={"stages": {"__all__": HASH_EXCLUDED}})
    for i, stage in enumerate(spec.stages):
        seed = stage.seed if stage.seed is not None else derive_seed(spec.seed, stage.name)
        refs = stage_refs(spec, stage)
        # A stage's identity includes what it reads: the upstream hash, or the path as written.
        upstream_ids = {f: hashes.get(ref, ref) for f, ref in refs.items()}
        digest = stage_hash(resolved, i, seed, upstream_ids, subject_contents(stage), stage.trains)
        hashes[stage.name] = digest
        where = lambda *path: str(locate(tree, ("stages", i, *path), fallback))
        ops = tuple(OpNode(op, params, where(*path)) for op, params, path in _ops(spec, stage))
        plans.append(StagePlan(
            name=stage.name, kind=stage.kind, from_=stage.from_,
            upstream={f: r for f, r in refs.items() if "/" not in r},
            steps=stage.steps, seed=seed, hash=digest,
            run_dir=str(Path(spec.output_dir) / spec.name / f"{stage.name}-{digest[:12]}"),
            loc=where(), ops=ops, executor_loc=where("executor", "kind")))
    return tuple(plans)


def stage_refs(spec: Spec, stage) -> dict[str, str]:
    """{field: stage name or path} a stage loads: its own fields, and for a stage working in the latent space of
    an autoencoder stage (model.latent.from), that stage, as `latent`."""
    refs = stage.refs()
    latent = spec.model.latent
    if latent.kind == "vae" and latent.from_ is not None and stage.trains != "vae":
        refs["latent"] = latent.from_
    return refs


def subject_contents(stage) -> str | None:
    """What a DreamBooth stage's subject folder holds (images and captions, a handful of files): replacing
    one image changes the stage although its spec does not. None for any other stage or source."""
    source = getattr(stage, "instance_data", None)
    if source is None or source.kind != "imagefolder":
        return None
    root = Path(source.path).expanduser()
    digest = hashlib.sha256()
    files = sorted(p for p in root.rglob("*") if p.is_file() and not any(
        part.startswith(".") for part in p.relative_to(root).parts)) if root.is_dir() else []
    for path in files:
        digest.update(f"{path.relative_to(root).as_posix()}\0".encode())
        try:
            digest.update(hashlib.sha256(path.read_bytes()).digest())
        except OSError:  # unreadable: the run names it
            digest.update(b"?")
    return digest.hexdigest()


def cache_status(run_dir: str) -> str:
    path = Path(run_dir)
    try:
        if (path / DONE_MARKER).exists():
            return "hit"
        if (path / "checkpoints").is_dir() and any((path / "checkpoints").iterdir()):
            return "resume"
    except OSError:  # an unreadable runs folder: nothing found there (the run itself will say why it cannot write)
        pass
    return "miss"


def _autoencoder_ops(spec: Spec, stage) -> Iterator[OpSpec]:
    """An autoencoder stage trains the VAE alone: no denoiser, no sampler; its grids are reconstructions."""
    yield OpSpec("load_autoencoder", {"preset": spec.model.latent.preset, "weights": stage.from_ or "init"},
                 ("from",) if stage.from_ else ())
    yield OpSpec("data", {"source": stage.data.source.kind, "phases": len(stage.data.curriculum)}, ("data",))
    yield OpSpec("train", {"objective": stage.objective_name(), "steps": stage.steps}, ("kind",))
    yield OpSpec("reconstruct", {"images": stage.eval_images}, ("eval_images",))
    yield OpSpec("latent_stats", {"images": stage.stats_images}, ("stats_images",))
    yield OpSpec("export_autoencoder", {}, ())


def _ops(spec: Spec, stage) -> Iterator[OpSpec]:
    """The stage's operators in the order the executor runs them; kind-specific ones come from its class."""
    if stage.trains == "vae":
        yield from _autoencoder_ops(spec, stage)
        return
    refs = stage.refs()
    start = refs.get("from")
    weights = f"stage:{start}" if start and "/" not in start else (start or spec.model.init.path or "init")
    upstream = next((s for s in spec.stages if s.name == start), None)
    if upstream is not None and upstream.lora is not None:
        weights += " with its LoRA merged"  # the upstream's base, plus its adapter (runtime/models/bundle.py)
    yield OpSpec("load_model", {"family": spec.model.kind, "preset": spec.model.preset, "weights": weights},
                 ("from",) if start else ())
    if stage.lora is not None:
        yield OpSpec("attach_lora", {"rank": stage.lora.rank, "alpha": stage.lora.resolved_alpha()}, ("lora",))
    for field in stage.reads:
        yield OpSpec(f"load_{field}", {"weights": refs[field]}, (field,))
    yield OpSpec("data", {"source": stage.data.source.kind, "phases": len(stage.data.curriculum)}, ("data",))
    yield from stage.extra_ops()
    yield OpSpec("train", {"objective": stage.objective_name(), "steps": stage.steps}, ("kind",))
    yield OpSpec("sample", {"prompts": len(stage.train.samples.prompts) + len(stage.validation_prompts_grid())},
                 ("train", "samples"))
    metric = EVALUATIONS.get(stage.data.source.kind)
    if metric is not None:
        yield OpSpec("evaluate", {"metric": metric}, ("data", "source"))
    yield from stage.closing_ops()
    yield OpSpec("export", {"lora": stage.lora is not None}, ())
