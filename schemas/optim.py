"""`optimizer:` the optimizer and its learning-rate schedule."""
from typing import Literal

from pydantic import Field

from .base import Block, tagged


class Constant(Block):
    kind: Literal["constant"] = Field("constant", description="Linear warm-up, then a constant rate.")
    warmup_steps: int = Field(0, ge=0, description="Steps of linear warm-up from 0.")


class Cosine(Block):
    kind: Literal["cosine"] = Field("cosine", description="Linear warm-up, then cosine decay to min_lr_ratio x lr at the last step.")
    warmup_steps: int = Field(0, ge=0, description="Steps of linear warm-up from 0.")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="Final rate as a fraction of lr.")


class Linear(Block):
    kind: Literal["linear"] = Field("linear", description="Linear warm-up, then linear decay to min_lr_ratio x lr at the last step.")
    warmup_steps: int = Field(0, ge=0, description="Steps of linear warm-up from 0.")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="Final rate as a fraction of lr.")


Schedule = tagged(Constant, Cosine, Linear, default="constant")


class AdamW(Block):
    kind: Literal["adamw"] = Field("adamw", description="torch.optim.AdamW (fused kernel where the device has one).")
    lr: float = Field(1e-4, gt=0, description="Peak learning rate.")
    betas: tuple[float, float] = Field((0.9, 0.999), description="Adam beta1, beta2.")
    weight_decay: float = Field(0.0, ge=0, description="Decoupled weight decay.")
    eps: float = Field(1e-8, gt=0, description="Adam epsilon.")
    schedule: Schedule = Field(default_factory=dict, validate_default=True, description="Learning-rate schedule.")


class SGD(Block):
    kind: Literal["sgd"] = Field("sgd", description="torch.optim.SGD with momentum.")
    lr: float = Field(1e-2, gt=0, description="Peak learning rate.")
    momentum: float = Field(0.9, ge=0, lt=1, description="Momentum.")
    weight_decay: float = Field(0.0, ge=0, description="Weight decay.")
    schedule: Schedule = Field(default_factory=dict, validate_default=True, description="Learning-rate schedule.")


Optimizer = tagged(AdamW, SGD, default="adamw")
