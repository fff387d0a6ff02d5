"""`lora:` low-rank adapters (peft) on any training stage."""
from typing import Literal

from pydantic import Field

from .base import Block

DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
LoraFormat = Literal["diffusers", "comfyui"]


class LoRA(Block):
    rank: int = Field(4, gt=0, description="Adapter rank r.")
    alpha: float | None = Field(None, gt=0, description="Scale numerator: the update is (alpha / r) B A x; omitted: alpha = r.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapter branch input.")
    targets: list[str] | Literal["all-linear"] = Field(
        default_factory=lambda: list(DEFAULT_TARGETS),
        description="Module names (suffix match, as peft) or 'all-linear'; checked against the model family.")
    init: Literal["default", "gaussian"] = Field("default", description="peft init: B = 0 with Kaiming A, or Gaussian A.")
    merge_on_export: bool = Field(False, description="Also export the full model with the adapter merged in.")
    format: LoraFormat | list[LoraFormat] = Field(
        "diffusers", description="Exported files: the diffusers one (peft key names, diffusers' LoRA loaders) is "
        "always written, as flowspec reads it back; comfyui adds a kohya-style file (lora_unet_/lora_transformer_ "
        "keys with lora_down/lora_up/alpha) that ComfyUI and most UIs load.")

    def formats(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([self.format] if isinstance(self.format, str) else self.format))

    def resolved_alpha(self) -> float:
        return float(self.alpha if self.alpha is not None else self.rank)
