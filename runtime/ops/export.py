"""Op `export`: the trained model (EMA weights when the stage keeps an EMA) as a diffusers folder; under
LoRA the adapter in diffusers' LoRA format, with the base it was trained on (and the merged model when
`merge_on_export` asks, or when the base is no exported folder a later load could start from)."""
from __future__ import annotations

from ..models.bundle import export_bundle
from ..models.lora import export_lora, merge_lora, write_base
from . import op
from .context import StageContext


@op("export", main_only=True)
def export(ctx: StageContext, params: dict) -> None:
    folder = ctx.run_dir / "model"
    lora = ctx.stage.lora
    with ctx.weights_for_export():
        if lora is None:
            export_bundle(ctx.bundle, folder)
        else:
            export_lora(ctx.bundle, lora, folder)
            if lora.merge_on_export or ctx.base is None:
                merge_lora(ctx.bundle)  # the stage's last op: nothing uses the adapter after this
                export_bundle(ctx.bundle, folder)
            else:
                write_base(folder, ctx.base, ctx.base_hash)
    if ctx.classes is not None:  # `flowspec sample` maps prompts to classes from the stage folder alone
        ctx.classes.save(folder)
