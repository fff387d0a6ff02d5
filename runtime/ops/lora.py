"""Op `attach_lora`: peft adapters on the loaded model; from here on only they train (runtime/models/lora.py)."""
from __future__ import annotations

from ..models.lora import attach_lora, fingerprint
from . import op
from .context import StageContext


@op("attach_lora")
def attach(ctx: StageContext, params: dict) -> None:
    # The base's hash goes into every checkpoint and the export: an adapter is only ever resumed or applied
    # on the weights it was trained on.
    ctx.base_hash = fingerprint(ctx.bundle)
    trainable = attach_lora(ctx.bundle, ctx.stage.lora)
    if ctx.dist.main:
        print(f"[{ctx.label}] LoRA rank {ctx.stage.lora.rank}: {trainable:,} trainable parameters on base "
              f"{ctx.base_hash}", flush=True)
