"""Op `load_model`: the model bundle, from the model spec's initialisation or the stage's `from`."""
from __future__ import annotations

from pathlib import Path

from ...compiler.lower import DONE_MARKER
from ..models.checkpointing import enable_checkpointing
from ..models.bundle import build_bundle, freeze, frozen_copy, load_backbone, load_exported
from ..train.speed import regions
from . import op
from .context import StageContext


@op("load_model")
def load_model(ctx: StageContext, params: dict) -> None:
    ctx.bundle = build_bundle(ctx.plan.model_spec(), ctx.seed, ctx.device)
    ctx.base = load_weights(ctx, ctx.bundle, ctx.stage.from_)
    setting = ctx.spec.model.gradient_checkpointing
    if setting == "auto":  # the plan's choice for this stage on its declared accelerator
        from ..estimate import estimate_stage

        names = estimate_stage(ctx.plan, ctx.stage_plan).checkpointed
        count = len(regions(ctx.bundle.denoiser.net))
        print(f"[{ctx.stage.name}] gradient checkpointing auto: {len(names)} of {count} blocks recompute their "
              f"activations" + (f" ({', '.join(names)})" if 0 < len(names) < count else ""), flush=True)
        enable_checkpointing(ctx.bundle.denoiser.net, names)
    elif setting:
        enable_checkpointing(ctx.bundle.denoiser.net, None)


def load_weights(ctx: StageContext, bundle, start: str | None) -> str | None:
    """The weights `start` names (an earlier stage, an exported folder, a diffusers folder or a
    .safetensors file) into `bundle`; the exported folder it came from, if any."""
    if start is not None and "/" in start:
        path = Path(start)
        if (path / "denoiser").is_dir() or (path / "lora").is_dir():
            load_exported(bundle, path)
            return str(path.resolve())
        load_backbone(bundle.denoiser.net, ctx.spec.model, path)
    elif start is not None:
        upstream = Path(ctx.plan.stage(start).run_dir)
        if not (upstream / DONE_MARKER).exists():
            raise RuntimeError(f"stage '{ctx.stage.name}' reads '{start}', which has not finished ({upstream})")
        load_exported(bundle, upstream / "model")  # a LoRA stage's: its base with the adapter merged in
        return str((upstream / "model").resolve())
    return None


@op("load_reference")
def load_reference(ctx: StageContext, params: dict) -> None:
    """The frozen reference policy of a preference stage; its hash goes into every checkpoint (a resume on
    a reference that changed is refused)."""
    ctx.reference, ctx.reference_hash = frozen_model(ctx, ctx.stage.reference, "reference")


@op("load_teacher")
def load_teacher(ctx: StageContext, params: dict) -> None:
    """The frozen teacher of a distillation stage, pinned by hash like a reference."""
    ctx.teacher, ctx.teacher_hash = frozen_model(ctx, ctx.stage.teacher, "teacher")


def frozen_model(ctx: StageContext, name: str | None, role: str):
    """(bundle, hash) of the frozen model `name` names (default: the `from` stage): the start with its LoRA
    adapter switched off (bundle None: nothing to load), a frozen copy of the start, or another stage's or
    folder's weights."""
    from ..models.lora import fingerprint

    name = name or ctx.stage.from_
    if name == ctx.stage.from_ and ctx.base_hash is not None:
        model, digest, how = None, ctx.base_hash, "the start with the LoRA adapter switched off"
    else:
        if name == ctx.stage.from_:
            model = frozen_copy(ctx.bundle)
        else:
            if "/" in name:
                check_family(ctx, Path(name), role)
            model = build_bundle(ctx.plan.model_spec(), ctx.seed, ctx.device)
            load_weights(ctx, model, name)
            freeze(model)
        digest, how = fingerprint(model), f"a frozen copy of {name}"
    if ctx.dist.main:
        print(f"[{ctx.label}] {role}: {how} (hash {digest})", flush=True)
    return model, digest


def check_family(ctx: StageContext, folder: Path, role: str) -> None:
    """A teacher or reference folder must hold this spec's model family in its latent space (the same
    backbone class and latent channels): refused at the stage's key otherwise, naming both."""
    import json

    from ...compiler import Issue, Location, SpecError
    from ..models.build import FAMILY_CLASSES
    from ..models.lora import read_base

    base = read_base(folder)
    weights = Path(base["base"]) if base is not None and not (folder / "denoiser").is_dir() else folder  # a LoRA folder: its base
    config_path = weights / "denoiser" / "config.json"
    if not config_path.is_file():
        return  # a plain backbone file or folder: load_weights says what is wrong with it
    config = json.loads(config_path.read_text())
    spec = ctx.spec.model
    resolved = spec.resolved_config()
    wanted = {"class": FAMILY_CLASSES[spec.kind].rsplit(".", 1)[-1],
              "in_channels": resolved.get("in_channels", resolved.get("in_dim"))}  # the MLP's points: in_dim
    found = {"class": config.get("_class_name"), "in_channels": config.get("in_channels", config.get("in_dim"))}
    if found != wanted:
        where = next((o.loc for o in ctx.stage_plan.ops if o.op == f"load_{role}"), ctx.stage_plan.loc)
        raise SpecError([Issue(Location.parse(where), f"stages.{ctx.stage.name}.{role}",
                               f"{folder} holds a {found['class']} with {found['in_channels']} latent channels, but this "
                               f"spec's model is a {wanted['class']} ({spec.kind}) with {wanted['in_channels']}: a "
                               f"{role} must be the same model family in the same latent space")])
