"""A stage kind of your own: flow matching with a loss weight that favours low noise levels.

    w(t) = floor + (1 - floor) (1 - t)^power        (t: the noise level, 1 = pure noise)

Used from a spec as

    - name: detail
      kind: custom
      target: weighted_fm:WeightedFlowMatching
      options: {power: 2.0, floor: 0.1}

flowspec imports this module beside the spec file, validates `options` with `Options` (a misspelled
option is a positioned error, like any key), and runs the objective on its shared training loop:
checkpoints and exact resume, EMA, logging, sample grids, evaluation, `--nproc` and SLURM come with it.
Subclass `Objective` instead to write a loss from scratch (see flowspec/runtime/objectives/base.py).
"""
import torch
from pydantic import BaseModel, ConfigDict, Field

from flowspec.runtime.objectives.base import Cost
from flowspec.runtime.objectives.flow_matching import FlowMatching


class WeightedFlowMatching(FlowMatching):
    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")  # required: an unknown option must be an error
        power: float = Field(1.0, ge=0, description="Exponent of (1 - t).")
        floor: float = Field(0.1, gt=0, le=1, description="Weight left at pure noise (t = 1).")

    def weighting(self, t: torch.Tensor) -> torch.Tensor:
        return self.options.floor + (1 - self.options.floor) * (1 - t) ** self.options.power

    @classmethod
    def cost(cls, stage, options=None) -> Cost:
        return Cost(forwards_per_sample=3.0)  # one forward and its backward per sample, as flow matching
