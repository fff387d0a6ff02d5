"""Flow-GRPO (algorithms.md section 6): SDE rollouts in groups of G per prompt, group-relative advantages,
PPO's clipped ratio objective on the first timestep_fraction of the steps, KL to the reference policy.

A group is a run of G rows of the global batch (it may span micro-batches and processes) under the
caption of its first row. Every inner_epochs optimizer steps, the first micro-batch call samples the
rollouts of all of this rank's micro-batches with the policy of that moment (the old policy); the rewards
of the whole global batch are summed into one vector across ranks (each rank fills its own rows), so the
advantages, and the weights, equal a one-process run's. The old policy's trainable weights are kept (and checkpointed) while
inner_epochs > 1, so a run resumed inside a batch of rollouts samples them again exactly.
The reference is the start with the LoRA adapter disabled, or a frozen copy of the starting model.
"""
from __future__ import annotations

import dataclasses
from contextlib import nullcontext

import torch
import torch.distributed as dist
from torch import Tensor

from ...schemas.buckets import bucket_sides
from ..core.grpo import (clipped_objective, group_advantages, sde_sigma, sde_step_mean, sde_step_std, step_kl,
                         step_log_prob)
from ..core.randomness import SliceRandom
from ..models.bundle import frozen_copy
from ..models.lora import adapters_disabled, fingerprint, has_lora
from ..sampling import grid_for, guided_velocity, latent_multiple, latent_shape
from ..train.snapshot import WeightSnapshot
from .base import TRAIN_PASSES, Cost, Objective, register_objective

ROLLOUT_STREAM = 0x6A09  # the rollouts' draws come from their own seed


@dataclasses.dataclass
class Rollout:
    """One micro-batch's rollouts: the prompts the model read (enhanced, if the stage has an enhancer; the
    rewards read the originals), the states x_0 (noise) .. x_S, the old policy's log-probabilities of each
    step (S, n), the rewards and advantages (n,)."""
    prompts: list[str]
    states: list[Tensor]
    old_log_probs: Tensor
    rewards: Tensor
    offset: int  # where its rows sit in the global batch of `total`
    total: int
    advantages: Tensor | None = None


OldPolicy = WeightSnapshot  # the trainable weights at the start of a batch of rollouts


@register_objective("flow_grpo")
class FlowGRPO(Objective):
    def __init__(self, ctx, options=None):
        super().__init__(ctx, options)
        stage = self.stage = ctx.stage
        self.bundle, self.feed, self.device, self.seed, self.dist = ctx.bundle, ctx.feed, ctx.device, ctx.seed, ctx.dist
        self.scorer, self.classes, self.enhancer = ctx.reward, ctx.classes, ctx.enhancer
        self.toy = ctx.bundle.denoiser.spec.kind == "mlp"
        multiple = 1 if self.toy else latent_multiple(ctx.bundle)
        resolution = stage.data.curriculum[-1].resolution
        self.height, self.width = (0, 0) if self.toy else bucket_sides(resolution, 1.0, multiple)
        self.sigmas = grid_for(ctx.bundle, stage.timesteps, stage.sampling_steps, self.height, self.width).tolist()
        self.trained = int(stage.timestep_fraction * stage.sampling_steps)
        self.reference = self.reference_bundle() if stage.kl_beta > 0 else None
        ctx.reference = self.reference  # sharded or offloaded beside the policy, as a loaded reference is
        if stage.kl_beta > 0:  # pinned in every checkpoint: a resume never moves the reference
            ctx.reference_hash = ctx.base_hash if self.reference is None else fingerprint(self.reference)
        trainable = ctx.bundle.trainable_modules()
        self.old_policy = OldPolicy(trainable) if stage.inner_epochs > 1 else None
        self.rollouts, self.batch_index = [], -1

    def reference_bundle(self):
        """None under LoRA (the adapter is switched off instead); else a frozen copy of the start."""
        if has_lora(self.bundle):
            return None
        return frozen_copy(self.bundle)

    def modules(self) -> dict:
        return {"grpo_old_policy": self.old_policy} if self.old_policy is not None else {}

    # ---------------------------------------------------------------------------------- rollouts
    def __call__(self, step: int, micro: int):
        batch_index = step // self.stage.inner_epochs
        if batch_index != self.batch_index:
            self.collect(batch_index * self.stage.inner_epochs, fresh=step % self.stage.inner_epochs == 0)
            self.batch_index = batch_index
        return self.policy_loss(self.rollouts[micro])

    def collect(self, first_step: int, fresh: bool) -> None:
        """The rollouts of every micro-batch of this rank, sampled at `first_step` by the old policy (the
        weights of now when `fresh`, else the kept ones: a run resumed inside a batch of rollouts)."""
        if self.old_policy is not None and fresh:
            self.old_policy.save()
        batches = [self.feed.batch(first_step, micro) for micro in range(self.ctx.accumulation)]
        prompts = self.group_prompts(batches)
        keep = self.old_policy.loaded() if self.old_policy is not None and not fresh else nullcontext()
        with keep, torch.no_grad():
            self.rollouts = [self.rollout(first_step, batch, prompts) for batch in batches]
        rewards = torch.zeros(len(prompts), dtype=torch.float64, device=self.device)  # the global batch's
        for r in self.rollouts:
            rewards[r.offset:r.offset + len(r.rewards)] = r.rewards.double()
        if self.dist.active:
            dist.all_reduce(rewards)  # each rank filled its own rows: the sum is exact
        advantages = group_advantages(rewards, self.stage.group_size, self.stage.global_std, self.stage.adv_clip_max)
        self.reward_stats = {"reward_mean": rewards.mean().item(), "reward_std": rewards.std(unbiased=False).item()}
        for r in self.rollouts:
            r.advantages = advantages[r.offset:r.offset + len(r.rewards)].float()

    def group_prompts(self, batches) -> list[str]:
        """The prompt of every row of the global batch: groups are runs of G rows of the global batch, which
        may span micro-batches and processes, and take the caption of their first row."""
        mine = [(b.offset, list(b.captions)) for b in batches]
        parts = [None] * self.dist.world
        if self.dist.active:
            dist.all_gather_object(parts, mine)
        else:
            parts = [mine]
        captions = [""] * (batches[0].total or len(batches[0].x))
        for offset, rows in (part for rank in parts for part in rank):
            captions[offset:offset + len(rows)] = rows
        G = self.stage.group_size
        return [captions[(i // G) * G] for i in range(len(captions))]

    def rollout(self, step: int, batch, prompts: list[str]) -> Rollout:
        stage, G = self.stage, self.stage.group_size
        n, total, rows = len(batch.x), len(prompts), range(batch.offset, batch.offset + len(batch.x))
        rand = SliceRandom((self.seed + ROLLOUT_STREAM) % 2**63, step, batch.offset, n, total)
        shape = latent_shape(self.bundle, n, self.height, self.width)
        noise = rand.draw("noise", lambda count, g: torch.randn((count, *shape[1:]), generator=g))  # global batch
        x = noise[[(i // G) * G if stage.shared_noise else i for i in rows]].to(self.device)
        mine = [prompts[i] for i in rows]
        given = self.enhancer(mine, self.seed + step) if self.enhancer is not None else mine  # what the model reads
        velocity = self.velocity(self.bundle, given)
        states, log_probs = [x], []
        for i in range(stage.sampling_steps):
            mean, std = self.step_gaussian(velocity, x, i)
            x = mean + std * rand.randn(f"sde_{i}", x.shape).to(self.device)
            states.append(x)
            log_probs.append(step_log_prob(x, mean, std))
        items = x if self.toy else self.bundle.codec.decode(x.float()).clamp(-1, 1)
        return Rollout(given, states, torch.stack(log_probs), self.scorer(items, mine), batch.offset, total)

    def velocity(self, bundle, prompts: list[str]):
        labels = self.classes.labels(prompts) if self.classes is not None else None
        labels = torch.tensor(labels, device=self.device) if labels is not None else None
        size = None if self.toy else (self.height, self.width)
        return guided_velocity(bundle, prompts, labels, size, self.stage.cfg_scale)

    def step_gaussian(self, velocity, x: Tensor, i: int) -> tuple[Tensor, float]:
        """The SDE step i's mean (a function of v(x, t_i)) and std."""
        t, t_next = self.sigmas[i], self.sigmas[i + 1]
        sigma = sde_sigma(t, self.sigmas[1], self.stage.noise_level)
        v = velocity(x, torch.full((len(x),), t, device=x.device))
        return sde_step_mean(x.float(), v.float(), t, t_next, sigma), sde_step_std(t, t_next, sigma)

    # ------------------------------------------------------------------------------------ policy
    def policy_loss(self, r: Rollout):
        stage = self.stage
        policy = self.velocity(self.bundle, r.prompts)
        reference = self.reference_velocity(r.prompts) if stage.kl_beta > 0 else None
        loss, kls, clipped, approx = 0.0, [], [], []
        for i in range(self.trained):
            mean, std = self.step_gaussian(policy, r.states[i], i)
            log_prob = step_log_prob(r.states[i + 1], mean, std)
            term, ratio = clipped_objective(log_prob, r.old_log_probs[i], r.advantages, stage.clip_range)
            clipped.append(((ratio - 1).abs() > stage.clip_range).float().mean())
            approx.append(0.5 * ((log_prob - r.old_log_probs[i]) ** 2).mean())
            if reference is not None:
                with torch.no_grad():
                    ref_mean, _ = reference(r.states[i], i)
                kl = step_kl(mean, ref_mean, self.sigmas[i], self.sigmas[i + 1],
                             sde_sigma(self.sigmas[i], self.sigmas[1], stage.noise_level), stage.kl_form).mean()
                kls.append(kl.detach())
                term = term + stage.kl_beta * kl
            loss = loss + term / self.trained
        metrics = {**self.reward_stats, "clip_fraction": torch.stack(clipped).mean().item(),
                   "approx_kl": torch.stack(approx).mean().item()}
        if kls:
            metrics["kl"] = torch.stack(kls).mean().item()
        return loss, metrics

    def reference_velocity(self, prompts: list[str]):
        """step_gaussian of the reference policy."""
        if self.reference is not None:
            velocity = self.velocity(self.reference, prompts)
            return lambda x, i: self.step_gaussian(velocity, x, i)

        def without_adapter(x, i):
            with adapters_disabled(self.bundle):
                return self.step_gaussian(self.velocity(self.bundle, prompts), x, i)

        return without_adapter

    @classmethod
    def cost(cls, stage, options=None) -> Cost:
        trained = int(stage.timestep_fraction * stage.sampling_steps)
        cfg = 2 if stage.cfg_scale != 1.0 else 1
        reference = trained if stage.kl_beta > 0 else 0  # one reference forward per trained step for the KL
        rollout = stage.sampling_steps / stage.inner_epochs  # a batch of rollouts serves inner_epochs steps
        return Cost(forwards_per_sample=cfg * (rollout + trained * TRAIN_PASSES + reference),
                    frozen_copies=("reference",) if stage.kl_beta > 0 else ())
