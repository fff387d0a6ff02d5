"""Op `load_model`: the model bundle, from the model spec's initialisation or the stage's `from`."""
from __future__ import annotations

from pathlib import Path

from ...compiler.lower import DONE_MARKER
from ..models.bundle import build_bundle, load_backbone, load_exported
from . import op
from .context import StageContext


@op("load_model")
def load_model(ctx: StageContext, params: dict) -> None:
    ctx.bundle = build_bundle(ctx.spec.model, ctx.seed, ctx.device)
    start = ctx.stage.from_
    if start is not None and "/" in start:
        path = Path(start)
        if (path / "denoiser").is_dir() or (path / "lora").is_dir():
            load_exported(ctx.bundle, path)
            ctx.base = str(path.resolve())
        else:
            load_backbone(ctx.bundle.denoiser.net, ctx.spec.model, path)
    elif start is not None:
        upstream = Path(ctx.plan.stage(start).run_dir)
        if not (upstream / DONE_MARKER).exists():
            raise RuntimeError(f"stage '{ctx.stage.name}' starts from '{start}', which has not finished ({upstream})")
        load_exported(ctx.bundle, upstream / "model")  # a LoRA stage's: its base with the adapter merged in
        ctx.base = str((upstream / "model").resolve())
    if ctx.spec.model.gradient_checkpointing:
        # Recompute each block's activations in the backward pass instead of keeping them (diffusers' own).
        ctx.bundle.denoiser.net.enable_gradient_checkpointing()
