"""The root of a spec file."""
from typing import Literal

from pydantic import Field

from .base import NAME_MAX, Block, LocalPath, PlainData, Seed
from .data import Data
from .executor import Executor, Tracking
from .model import Model
from .optim import Optimizer
from .stages import Stage
from .timesteps import Timesteps
from .train import Train

SCHEMA_VERSION = 1


class Spec(Block):
    flowspec: Literal[1] = Field(description="Version of the spec language this file is written in.")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=NAME_MAX,
                      description="Run name: artifacts go to <output_dir>/<name>/.")
    seed: Seed = Field(0, description="Root seed; each stage derives its own from it.")
    output_dir: LocalPath = Field("runs", description="Where run folders go (relative to the working directory).")
    model: Model = Field(description="The denoiser, its text encoder and its latent space.")
    data: Data = Field(description="Data of every stage unless a stage overrides keys of it.")
    timesteps: Timesteps = Field(default_factory=dict, validate_default=True, description="Timestep sampling of every stage unless overridden.")
    optimizer: Optimizer = Field(default_factory=dict, validate_default=True, description="Optimizer of every stage unless overridden.")
    train: Train = Field(default_factory=dict, validate_default=True, description="Training settings of every stage unless overridden.")
    stages: list[Stage] = Field(min_length=1, description="The chain, run in this order.")
    executor: Executor = Field(default_factory=dict, validate_default=True, description="Where stages run unless a stage overrides it.")
    tracking: Tracking = Field(default_factory=dict, validate_default=True, description="Where metrics go.")
    profiles: dict[str, dict[str, PlainData]] = Field(
        default_factory=dict, description="Named override sets {dotted.key: value}, applied with --profile NAME.")

