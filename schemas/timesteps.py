"""`timesteps:` how training draws t (the noise level) and how the schedule is shifted."""
from typing import Literal

from pydantic import Field

from .base import Block, tagged


class Uniform(Block):
    kind: Literal["uniform"] = Field("uniform", description="t ~ U(0, 1).")


class LogitNormal(Block):
    kind: Literal["logit_normal"] = Field("logit_normal", description="t = sigmoid(n), n ~ N(m, s^2) (SD3's rf/lognorm).")
    m: float = Field(0.0, description="Mean of n (location in logit space).")
    s: float = Field(1.0, gt=0, description="Standard deviation of n.")


class Mode(Block):
    kind: Literal["mode"] = Field("mode", description="Mode sampling with heavy tails: t = 1 - u - scale*(cos^2(pi u/2) - 1 + u).")
    scale: float = Field(1.29, ge=-1.0, le=1.7519, description="Tail scale s; monotone for -1 <= s <= 2/(pi-2); 0 is uniform.")


class CosMap(Block):
    kind: Literal["cosmap"] = Field("cosmap", description="t = 1 - 1/(tan(pi u/2) + 1), density 2/(pi(1 - 2t + 2t^2)).")


Sampler = tagged(Uniform, LogitNormal, Mode, CosMap, default="logit_normal")


class NoShift(Block):
    kind: Literal["none"] = Field("none", description="No shift.")


class FixedShift(Block):
    kind: Literal["fixed"] = Field("fixed", description="shift(t) = alpha t / (1 + (alpha - 1) t) (SD3 uses alpha 3 at 1024 px).")
    alpha: float = Field(3.0, gt=0, description="Shift factor; > 1 moves t towards noise.")


class ResolutionShift(Block):
    kind: Literal["resolution"] = Field("resolution", description="alpha = sqrt(pixels / base pixels), recomputed at every resolution change.")
    base_resolution: int = Field(256, gt=0, description="Side of the square resolution where alpha = 1.")


class DynamicShift(Block):
    kind: Literal["dynamic"] = Field("dynamic", description="Flux: logit(t') = logit(t) + mu, mu linear in the image token count.")
    base_shift: float = Field(0.5, description="mu at base_seq_len tokens.")
    max_shift: float = Field(1.15, description="mu at max_seq_len tokens.")
    base_seq_len: int = Field(256, gt=0, description="Token count where mu = base_shift.")
    max_seq_len: int = Field(4096, gt=0, description="Token count where mu = max_shift.")


Shift = tagged(NoShift, FixedShift, ResolutionShift, DynamicShift, default="none")


class Timesteps(Block):
    sampler: Sampler = Field(default_factory=dict, validate_default=True, description="Training density of t.")
    shift: Shift = Field(default_factory=dict, validate_default=True, description="Shift applied to training t and to the inference grid.")
    loss_weighting: Literal["none", "sigma_sqrt", "cosmap"] = Field(
        "none", description="Per-sample loss weight w(t): none 1, sigma_sqrt t^-2, cosmap 2/(pi(1 - 2t + 2t^2)).")
