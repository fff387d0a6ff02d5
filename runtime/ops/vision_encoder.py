"""Op `vision_encoder`: one REPA term (aux_losses entry) with its frozen encoder and trained projector."""
from __future__ import annotations

from . import op
from .context import StageContext


@op("vision_encoder")
def vision_encoder(ctx: StageContext, params: dict) -> None:
    from ..models.repa import RepaLoss

    block = ctx.stage.aux_losses[params["index"]]
    config = ctx.spec.model.resolved_config()
    width = config["num_attention_heads"] * config["attention_head_dim"]
    repa = RepaLoss(block, ctx.bundle.denoiser, width).to(ctx.device)
    if ctx.stage.data.cache.repa_targets:
        from ..data.cache import ContentCache

        shared = [r.cache for r in ctx.repa if r.cache is not None]  # one cache object per folder
        repa.cache = shared[0] if shared else ContentCache(ctx.stage.data.cache.dir, "repa")
        if not shared:
            ctx.caches.append(repa.cache)
    ctx.repa.append(repa)
