"""Pure tensor code of flow matching: paths, timestep samplers and shifts, losses, ODE solvers, oracles.

Convention (algorithms.md section 0): t is the noise level, x_t = (1-t) x0 + t eps, v = eps - x0,
and sampling runs from t = 1 to t = 0.
"""
from .loss import condition_dropout_mask, flow_matching_loss, per_sample_loss
from .oracles import gaussian_min_loss, gaussian_velocity, mixture_velocity, rectified_gaussian_velocity
from .paths import LinearPath, PathSample
from .shifts import (
    DynamicShift,
    FixedShift,
    NoShift,
    ResolutionShift,
    Shift,
    inference_sigmas,
    shift,
    shift_from_spec,
)
from .solvers import VelocityFn, cfg_velocity, euler, heun, sample_ode
from .timesteps import (
    CosMap,
    LogitNormal,
    Mode,
    TimestepDistribution,
    TimestepSample,
    TimestepSampler,
    Uniform,
    loss_weight,
    sampler_from_spec,
)

__all__ = [
    "CosMap", "DynamicShift", "FixedShift", "LinearPath", "LogitNormal", "Mode", "NoShift", "PathSample",
    "ResolutionShift", "Shift", "TimestepDistribution", "TimestepSample", "TimestepSampler", "Uniform",
    "VelocityFn", "cfg_velocity", "condition_dropout_mask", "euler", "flow_matching_loss", "gaussian_min_loss",
    "gaussian_velocity", "heun", "inference_sigmas", "loss_weight", "mixture_velocity", "per_sample_loss",
    "rectified_gaussian_velocity", "sample_ode", "sampler_from_spec", "shift", "shift_from_spec",
]
