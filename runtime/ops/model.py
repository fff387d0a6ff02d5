"""Op `load_model`: the model bundle, from the model spec's initialisation or the stage's `from`."""
from __future__ import annotations

from pathlib import Path

from ...compiler.lower import DONE_MARKER
from ..models.bundle import build_bundle, freeze, frozen_copy, load_backbone, load_exported
from . import op
from .context import StageContext


@op("load_model")
def load_model(ctx: StageContext, params: dict) -> None:
    ctx.bundle = build_bundle(ctx.spec.model, ctx.seed, ctx.device)
    ctx.base = load_weights(ctx, ctx.bundle, ctx.stage.from_)
    if ctx.spec.model.gradient_checkpointing:
        # Recompute each block's activations in the backward pass instead of keeping them (diffusers' own).
        ctx.bundle.denoiser.net.enable_gradient_checkpointing()


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
    """The frozen reference policy: the start with the LoRA adapter switched off (nothing to load), a frozen
    copy of the start, or another stage's weights. Its hash goes into every checkpoint: a resume on a
    reference that changed is refused."""
    from ..models.lora import fingerprint

    reference = ctx.stage.reference or ctx.stage.from_
    if reference == ctx.stage.from_ and ctx.base_hash is not None:
        ctx.reference, ctx.reference_hash = None, ctx.base_hash
        how = "the start with the LoRA adapter switched off"
    else:
        if reference == ctx.stage.from_:
            ctx.reference = frozen_copy(ctx.bundle)
        else:
            ctx.reference = build_bundle(ctx.spec.model, ctx.seed, ctx.device)
            load_weights(ctx, ctx.reference, reference)
            freeze(ctx.reference)
        ctx.reference_hash = fingerprint(ctx.reference)
        how = f"a frozen copy of {reference}"
    if ctx.dist.main:
        print(f"[{ctx.label}] reference: {how} (hash {ctx.reference_hash})", flush=True)
