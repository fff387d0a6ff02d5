"""Consistency distillation, LCM in flow form (algorithms.md section 9.3).

The consistency function is f(x, t) = x - t v(x, t), the clean estimate, so f(x, 0) = x holds for any
weights. The teacher's grid is LCM's: num_timesteps points `skip` apart on a 1000-step grid, shifted as the
stage's timesteps say (t_n = shift(n skip / 1000)). A step draws n, puts data at t_{n+1} on the path, takes
one guided teacher Euler step to t_n with w drawn from w_range, and pulls the student's f(x_{t_{n+1}}) to
the target network's f(x_{t_n}) (l2 or pseudo-Huber). The target network is an EMA of the student
(ema_decay; 1 keeps the start), kept in the checkpoint.

w is drawn per sample, but none of the families here has a guidance embedding to feed it to, so the student
learns the teacher guided at w's spread: a narrow w_range (one value: [w, w]) is the usual choice. Sample the
student with `train.samples.solver: consistency` (runtime/core/solvers.py), or one Euler step.
"""
from __future__ import annotations

import torch

from ..core import per_sample_loss
from ..core.distill import consistency_function, ema_update, pseudo_huber
from ..core.paths import expand_t
from ..core.shifts import shift_from_spec
from ..train.snapshot import WeightSnapshot
from .base import TRAIN_PASSES, Cost, register_objective
from .distill_common import DistillObjective, eval_mode

FINE_GRID = 1000  # LCM's skip is counted on diffusers' 1000 training timesteps


@register_objective("consistency_distill")
class ConsistencyDistill(DistillObjective):
    def __init__(self, ctx, options=None):
        super().__init__(ctx, options)
        self.target = WeightSnapshot(ctx.bundle.trainable_modules())
        self.updated_at = None

    def modules(self) -> dict:
        return {"consistency_target": self.target}

    def teacher_grid(self, size) -> torch.Tensor:
        """t_0 = 0 < t_1 < ... < t_num_timesteps, increasing: the teacher steps from t_{n+1} down to t_n."""
        stage = self.stage
        height, width = size or (0, 0)
        seq_len = max(height // self.multiple, 1) * max(width // self.multiple, 1)
        uniform = torch.arange(stage.num_timesteps + 1, dtype=torch.float64) * stage.skip / FINE_GRID
        return shift_from_spec(stage.timesteps.shift)(uniform, height, width, seq_len).float()

    def __call__(self, step: int, micro: int):
        stage = self.stage
        if micro == 0 and self.updated_at != step:
            if step > 0:  # the target follows the student of the last step
                ema_update(self.target.kept(), self.target.params.values(), stage.ema_decay)
            self.updated_at = step
        clean = self.clean(step, micro)
        n, rand = len(clean.x0), clean.rand
        grid = self.teacher_grid(clean.size).to(self.device)
        index = rand.rows(rand.draw("n", lambda total, g: torch.randint(0, stage.num_timesteps, (total,), generator=g)))
        low, high = stage.w_range
        w = low + (high - low) * rand.rows(rand.draw("w", lambda total, g: torch.rand(total, generator=g)))
        index, w = index.to(self.device), w.to(self.device)
        t_hi, t_lo = grid[index + 1], grid[index]
        eps = self.noise_like(rand, "noise", n, clean.size)
        x_hi = (1 - expand_t(t_hi, clean.x0)) * clean.x0 + expand_t(t_hi, clean.x0) * eps
        with torch.no_grad():
            teacher = self.teacher_field(clean, w)
            x_lo = x_hi + expand_t(t_lo - t_hi, x_hi) * teacher(x_hi, t_hi)
            with self.target.loaded(), eval_mode(self.bundle):  # the target's text encoder too: built inside
                target = consistency_function(x_lo, t_lo, self.student(clean)(x_lo, t_lo))
        online = consistency_function(x_hi, t_hi, self.student(clean)(x_hi, t_hi))
        if stage.loss == "huber":
            loss = pseudo_huber(online, target, stage.huber_c).mean()
        else:
            loss = per_sample_loss(online, target).mean()
        return loss, {"w_mean": w.mean()}

    @classmethod
    def cost(cls, stage, options=None) -> Cost:
        # the guided teacher step (conditional + unconditional), the target network, the student
        return Cost(forwards_per_sample=2 + 1 + TRAIN_PASSES, frozen_copies=("teacher",), teacher_forwards=2)
