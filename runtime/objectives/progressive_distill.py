"""Progressive distillation in flow form (algorithms.md section 9.1): one student step matches two teacher steps;
the teacher becomes the student after each round.

The stage's steps are split evenly over `rounds`. In round r the teacher samples with N = teacher_steps / 2^r
steps and the student learns N / 2 of them: x_t on the data path at a point t of the student's nested grid,
the target the velocity that lands where the teacher's two Euler steps t -> t' -> t'' land (t' the teacher grid
point between). Round 0's teacher is the frozen teacher, guided at cfg_scale; round r > 0's is the student as
round r started, kept in the checkpoint (a run resumed inside a round gets the same teacher back).
"""
from __future__ import annotations

import torch

from ..core import per_sample_loss
from ..core.distill import progressive_target
from ..core.paths import expand_t
from ..train.snapshot import WeightSnapshot
from .base import TRAIN_PASSES, Cost, register_objective
from .distill_common import DistillObjective, eval_mode


def round_starts(steps: int, rounds: int) -> list[int]:
    """The first optimizer step of each round: the steps split as evenly as they go."""
    return [(r * steps + rounds - 1) // rounds for r in range(rounds)]


@register_objective("progressive_distill")
class ProgressiveDistill(DistillObjective):
    def __init__(self, ctx, options=None):
        super().__init__(ctx, options)
        self.starts = round_starts(self.stage.steps, self.stage.rounds)
        # the student as the current round began: the teacher of rounds after the first
        self.previous = WeightSnapshot(ctx.bundle.trainable_modules()) if self.stage.rounds > 1 else None

    def modules(self) -> dict:
        return {"round_teacher": self.previous} if self.previous is not None else {}

    def round_of(self, step: int) -> int:
        return max(r for r, start in enumerate(self.starts) if start <= step)

    def __call__(self, step: int, micro: int):
        r = self.round_of(step)
        if r > 0 and step == self.starts[r] and micro == 0:
            self.previous.save()  # teacher := student
        clean = self.clean(step, micro)
        n, rand = len(clean.x0), clean.rand
        teacher_n = self.stage.teacher_steps // 2 ** r
        grid = self.grid(teacher_n, clean.size)
        index = rand.rows(rand.draw("interval", lambda total, g: torch.randint(0, teacher_n // 2, (total,), generator=g)))
        index = 2 * index.to(self.device)
        t, t_mid, t_end = grid[index], grid[index + 1], grid[index + 2]
        eps = self.noise_like(rand, "noise", n, clean.size)
        x_t = (1 - expand_t(t, clean.x0)) * clean.x0 + expand_t(t, clean.x0) * eps
        if r == 0:
            with torch.no_grad():
                target = progressive_target(self.teacher_field(clean, self.stage.teacher_cfg()), x_t, t, t_mid, t_end)
        else:  # the student as the round began, its text encoder included: the condition is built inside
            with torch.no_grad(), self.previous.loaded(), eval_mode(self.bundle):
                target = progressive_target(self.student(clean), x_t, t, t_mid, t_end)
        v = self.student(clean)(x_t, t)
        loss = per_sample_loss(v, target.float()).mean()
        return loss, {"round": r, "student_steps": teacher_n // 2}

    @classmethod
    def cost(cls, stage, options=None) -> Cost:
        cfg = 2 if stage.teacher_cfg() != 1.0 else 1
        # two teacher steps (guided in round 0, the unguided student after) and the student's step
        first = 1 / stage.rounds
        teacher = 2 * (first * cfg + (1 - first))
        return Cost(forwards_per_sample=teacher + TRAIN_PASSES, frozen_copies=("teacher",), teacher_forwards=teacher)
