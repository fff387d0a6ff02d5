"""Op `discriminator`: ADD's discriminator heads on the frozen feature network (runtime/models/discriminator.py).
An encoder that cannot be loaded offline is a positioned error at the stage's discriminator.encoder, saying
what to install or where the weights must be."""
from __future__ import annotations

from ...compiler import Issue, Location, SpecError
from . import op
from .context import StageContext


@op("discriminator")
def discriminator(ctx: StageContext, params: dict) -> None:
    from ..models.discriminator import Discriminator
    from ..models.vision import build_vision_encoder

    encoder, text_width = None, None
    if not ctx.toy:
        block = ctx.stage.discriminator.encoder
        try:
            encoder = build_vision_encoder(block)
        except (ImportError, OSError, ValueError) as exc:
            where = next((o.loc for o in ctx.stage_plan.ops if o.op == "discriminator"), ctx.stage_plan.loc)
            raise SpecError([Issue(Location.parse(where), f"stages.{ctx.stage.name}.discriminator.encoder",
                                   f"the {block.kind} encoder cannot be loaded offline: {exc}")]) from None
        if ctx.bundle.text_encoder is not None:
            text_width = int(ctx.bundle.text_encoder([""]).pooled.shape[-1])
    ctx.discriminator = Discriminator(encoder, text_width).to(ctx.device)
    if ctx.dist.main:
        heads = sum(p.numel() for p in ctx.discriminator.trained_parameters())
        kind = ctx.stage.discriminator.encoder.kind if encoder is not None else "2-D points"
        print(f"[{ctx.label}] discriminator: {heads:,} trained parameters on {kind}", flush=True)
