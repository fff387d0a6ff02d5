"""Op `export`: the trained model (EMA weights when the stage keeps an EMA) as a diffusers folder."""
from __future__ import annotations

from ..models.bundle import export_bundle
from . import op
from .context import StageContext


@op("export", main_only=True)
def export(ctx: StageContext, params: dict) -> None:
    with ctx.weights_for_export():
        export_bundle(ctx.bundle, ctx.run_dir / "model")
    if ctx.classes is not None:  # `flowspec sample` maps prompts to classes from the stage folder alone
        ctx.classes.save(ctx.run_dir / "model")
