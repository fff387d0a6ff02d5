"""Op `attach_lora`: peft adapters on the loaded model; from here on only they train (runtime/models/lora.py)."""
from __future__ import annotations

from ...compiler import Issue, Location, SpecError
from ..models.lora import attach_lora, fingerprint
from . import op
from .context import StageContext


@op("attach_lora")
def attach(ctx: StageContext, params: dict) -> None:
    # The base's hash goes into every checkpoint and the export: an adapter is only ever resumed or applied
    # on the weights it was trained on.
    ctx.base_hash = fingerprint(ctx.bundle)
    try:
        trainable = attach_lora(ctx.bundle, ctx.stage.lora)
    except ValueError as exc:  # e.g. a rank above a targeted layer's width
        where = next((node.loc for node in ctx.stage_plan.ops if node.op == "attach_lora"), ctx.stage_plan.loc)
        raise SpecError([Issue(Location.parse(where), f"stages.{ctx.stage.name}.lora.rank", str(exc))]) from None
    if ctx.dist.main:
        print(f"[{ctx.label}] LoRA rank {ctx.stage.lora.rank}: {trainable:,} trainable parameters on base "
              f"{ctx.base_hash}", flush=True)
