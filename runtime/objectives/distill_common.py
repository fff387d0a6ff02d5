"""What every distillation objective shares (algorithms.md section 9): the frozen teacher's guided field (run
without autograd, in eval mode), the student's field, clean data in latent space, the student's nested grid.

The teacher is ctx.teacher (load_teacher), or, when it is the start of a LoRA stage, the student's own model
with its adapter switched off. The student learns the guided teacher with its condition always on, so it
samples without guidance (schemas/stages/distillation.py: DistillBase.sampling).
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor

from ...schemas.buckets import bucket_sides
from ..core import cfg_velocity
from ..core.paths import expand_t
from ..core.randomness import SliceRandom
from ..models.conditioning import empty_condition, make_condition
from ..models.lora import adapters_disabled
from ..sampling import grid_for, latent_multiple, latent_shape
from .base import Objective


@dataclass
class Clean:
    """A batch in the student's space: x0 (latents, or points), its captions, labels and image size."""
    x0: Tensor
    captions: list[str]
    labels: Tensor | None
    size: tuple[int, int] | None
    rand: SliceRandom


class DistillObjective(Objective):
    def __init__(self, ctx, options=None):
        super().__init__(ctx, options)
        self.stage, self.bundle, self.feed = ctx.stage, ctx.bundle, ctx.feed
        self.device, self.seed, self.dist, self.classes = ctx.device, ctx.seed, ctx.dist, ctx.classes
        self.frozen = Teacher(ctx.bundle, ctx.teacher)
        self.toy = ctx.bundle.denoiser.spec.kind == "mlp"
        self.multiple = 1 if self.toy else latent_multiple(ctx.bundle)

    # ------------------------------------------------------------------------------ data
    def clean(self, step: int, micro: int, batch=None) -> Clean:
        """Micro-batch `micro` of step `step` encoded to the student's space; its draws a function of
        (seed, step, rows of the global batch)."""
        batch = batch or self.feed.batch(step, micro)
        n = len(batch.x)
        rand = SliceRandom(self.seed, step, batch.offset, n, batch.total or n)
        x0 = self.bundle.codec.encode(batch.x.to(self.device), lambda shape: rand.randn("posterior", shape), batch.keys)
        size = None if self.toy else (batch.height, batch.width)
        return Clean(x0, list(batch.captions), batch.class_labels, size, rand)

    def grid(self, num_steps: int, size: tuple[int, int] | None) -> Tensor:
        """The student's nested grid of num_steps steps at this size (shifted as the stage's timesteps say)."""
        height, width = size or (0, 0)
        return grid_for(self.bundle, self.stage.timesteps, num_steps, height, width, "nested").to(self.device)

    def noise_like(self, rand: SliceRandom, name: str, n: int, size) -> Tensor:
        height, width = size or (0, 0)
        return rand.randn(name, latent_shape(self.bundle, n, height, width)).to(self.device)

    # ------------------------------------------------------------------------------ fields
    def student(self, clean: Clean):
        """v(x, t) of the student under its condition (with autograd)."""
        cond = make_condition(self.bundle, clean.captions, clean.labels, clean.size)
        return lambda x, t: self.bundle.denoiser.velocity(x, t, cond).float()

    def teacher_field(self, clean: Clean, scale: float | Tensor):
        return self.frozen.field(clean.captions, clean.labels, clean.size, scale)


def final_size(stage, bundle) -> tuple[int, int] | None:
    """The image size of the stage's last curriculum phase (square), None for 2-D points."""
    if bundle.denoiser.spec.kind == "mlp":
        return None
    return bucket_sides(stage.data.curriculum[-1].resolution, 1.0, latent_multiple(bundle))


def teacher_stage(spec, stage):
    """The stage block the teacher comes from (None for a folder by path), and whether it is a distilled
    student (which samples on its own grid, with its own solver)."""
    from ...schemas.stages import DistillBase

    name = stage.teacher or stage.from_
    upstream = next((s for s in spec.stages if s.name == name), None)
    return upstream, isinstance(upstream, DistillBase)


class Teacher:
    """The frozen teacher: its own bundle, or (None) the student's model with the LoRA adapter switched off."""

    def __init__(self, bundle, teacher=None):
        self.bundle, self.teacher = bundle, teacher

    def field(self, captions: list[str], labels: Tensor | None, size, scale: float | Tensor):
        """v(x, t) of the teacher guided at `scale` (a number, or one per sample), without autograd."""
        bundle = self.teacher or self.bundle
        cond = make_condition(bundle, captions, labels, size)
        droppable = cond.text is not None or cond.class_labels is not None
        per_sample = isinstance(scale, Tensor)
        guided = droppable and (per_sample or scale != 1.0)
        both = type(cond).cat(cond, empty_condition(bundle, len(captions), size)) if guided else cond

        @torch.no_grad()
        def velocity(x, t):
            with self.active():
                if not guided:
                    return bundle.denoiser.velocity(x, t, cond).float()
                v_cond, v_uncond = bundle.denoiser.velocity(torch.cat([x, x]), torch.cat([t, t]), both).float().chunk(2)
                return cfg_velocity(v_cond, v_uncond, expand_t(scale, x) if per_sample else scale)

        return velocity

    @contextmanager
    def active(self):
        """The teacher's weights and eval mode for the block: the frozen copy as it is, or the student's model
        with its adapter off (and put back in the mode it was in)."""
        if self.teacher is not None:
            yield
            return
        with eval_mode(self.bundle), adapters_disabled(self.bundle):
            yield


def eval_mode(bundle):
    """The bundle's denoiser in eval mode for a block (a frozen copy is in eval mode already)."""
    denoiser = bundle.denoiser
    if not denoiser.training:
        return nullcontext()

    @contextmanager
    def switched():
        denoiser.eval()
        try:
            yield
        finally:
            denoiser.train(True)

    return switched()
