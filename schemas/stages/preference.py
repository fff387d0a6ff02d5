"""Preference tuning: reward feedback learning, Flow-GRPO, Diffusion-DPO (algorithms.md sections 5-8)."""
from __future__ import annotations

from typing import ClassVar, Iterator, Literal

from pydantic import Field, model_validator

from ..base import Block, LocalPath, tagged
from ..rewards import Reward, is_differentiable
from .base import Note, OpSpec, StageBase

SHAPES_REWARDS = ("shapes_checker", "shapes_color")


def reward_notes(reward, data, path: tuple) -> Iterator[Note]:
    """A reward that scores against shapes captions needs shapes data; toy2d_region scores 2-D points, and
    only it does (a plugin may score either)."""
    source = data.source.kind
    if reward.kind in SHAPES_REWARDS and source != "shapes":
        yield Note((*path, "kind"), f"{reward.kind} scores against shapes captions; this stage's data is {source}")
    elif reward.kind == "toy2d_region" and source != "toy2d":
        yield Note((*path, "kind"), f"toy2d_region scores 2-D points; this stage's data is {source} (images)")
    elif reward.kind not in ("toy2d_region", "module") and source == "toy2d":
        yield Note((*path, "kind"), f"{reward.kind} scores images; this stage's data is toy2d (2-D points)")


class Gold(Block):
    reward: Reward = Field(description="The held-out metric: another reward than the one trained on (e.g. "
                           "shapes_checker), scored on the evaluation's fixed prompts and seeds.")
    every: int = Field(50, gt=0, description="Evaluate every this many steps (logged as `gold` beside the training "
                       "reward; gold.json in the stage folder).")
    stop_when_gold_drops: int | None = Field(None, gt=0, description="Finish the stage once the gold metric has "
                                             "stayed below its best for this many evaluations in a row, and export "
                                             "the weights of its best evaluation; null: train all steps.")


def gold_ops(stage) -> Iterator[OpSpec]:
    if stage.gold is not None:
        yield OpSpec("gold", {"reward": stage.gold.reward.kind, "every": stage.gold.every}, ("gold",))


def gold_notes(stage) -> Iterator[Note]:
    if stage.gold is not None:
        yield from reward_notes(stage.gold.reward, stage.data, ("gold", "reward"))
        if stage.gold.every > stage.steps:
            yield Note(("gold", "every"), f"gold every {stage.gold.every} steps never runs in the stage's {stage.steps}")


GOLD = Field(None, description="A held-out evaluation against reward hacking, with an optional early stop.")


class RewardFeedback(StageBase):
    """Reward feedback learning (ReFL, Xu et al. 2023; DRaFT, Clark et al. 2023; AlignProp): sample from noise
    with the policy, backpropagate a differentiable reward through the last sampling steps (`grad_steps`), with
    an optional flow-matching term on data to keep the model close to the data."""

    needs_start: ClassVar[bool] = True
    objective: ClassVar[str] = "reward_feedback"
    generates: ClassVar[bool] = True

    kind: Literal["reward_feedback"] = Field("reward_feedback", description="ReFL: back-propagate a differentiable reward through one late sampler step.")
    reward: Reward = Field(description="Reward model; must be differentiable.")
    sampling_steps: int = Field(40, gt=1, description="Steps of the rollout sampler.")
    grad_steps: tuple[int, int] = Field((30, 39), description="The step with gradient is drawn uniformly from this range (0-based).")
    backprop_steps: int = Field(1, ge=1, description="Truncated backpropagation: the gradient flows through this many "
                                "sampler steps, ending at the drawn step (1: ReFL; grad_steps at the last step: DRaFT-K).")
    grad_scale: float = Field(1e-3, gt=0, description="Loss scale of the reward term.")
    reward_margin: float = Field(2.0, description="Loss is ReLU(margin - reward).")
    pretrain_loss_weight: float = Field(1.0, ge=0, description="Weight of the interleaved flow-matching loss on real data.")
    gold: Gold | None = GOLD

    @model_validator(mode="after")
    def _range(self):
        lo, hi = self.grad_steps
        if not 0 <= lo <= hi < self.sampling_steps:
            raise ValueError(f"grad_steps [{lo}, {hi}] must lie within 0..{self.sampling_steps - 1}")
        if self.backprop_steps > lo + 1:
            raise ValueError(f"backprop_steps {self.backprop_steps} reaches before the first step when the drawn step "
                             f"is {lo}: at most {lo + 1}")
        return self

    def extra_ops(self) -> Iterator[OpSpec]:
        yield from super().extra_ops()
        yield OpSpec("reward", {"reward": self.reward.kind}, ("reward",))
        yield from gold_ops(self)

    def findings(self, spec) -> Iterator[Note]:
        yield from super().findings(spec)
        if not is_differentiable(self.reward):
            yield Note(("reward", "kind"), f"ReFL back-propagates through the reward, but {self.reward.kind} is not "
                       "differentiable (use flow_grpo, or a differentiable reward)")
        yield from reward_notes(self.reward, self.data, ("reward",))
        yield from gold_notes(self)


class FlowGRPO(StageBase):
    """Flow-GRPO (Liu et al. 2025; DanceGRPO, Xue et al. 2025): the ODE sampler made an SDE with the same
    marginals, rollouts in groups per prompt, group-relative advantages, PPO's clipped ratio on the first
    `timestep_fraction` of the steps and a KL to the reference policy (`kl_beta`)."""

    needs_start: ClassVar[bool] = True
    objective: ClassVar[str] = "flow_grpo"
    generates: ClassVar[bool] = True

    kind: Literal["flow_grpo"] = Field("flow_grpo", description="Flow-GRPO: group-relative policy optimisation over SDE rollouts.")
    reward: Reward = Field(description="Reward model (differentiability not needed).")
    group_size: int = Field(24, ge=2, description="Images per prompt (G).")
    noise_level: float = Field(0.7, gt=0, description="SDE noise level a: sigma_t = a sqrt(t / (1 - t)) (above 0: at 0 "
                               "the step is the ODE's, with no probability to take a ratio of).")
    clip_range: float = Field(1e-4, gt=0, description="PPO ratio clip epsilon.")
    kl_beta: float = Field(0.04, ge=0, description="Weight of the KL to the reference policy.")
    kl_form: Literal["per_dim", "exact"] = Field(
        "per_dim", description="per_dim: mean over dims of (mu - mu_ref)^2 / (2 sigma_t^2) as the reference code; "
        "exact: the Gaussian KL with |dt|.")
    adv_clip_max: float = Field(5.0, gt=0, description="Advantages are clipped to +-this.")
    global_std: bool = Field(True, description="Normalise advantages by the std of the whole batch (mean per prompt).")
    sampling_steps: int = Field(10, gt=1, description="SDE steps of a rollout.")
    eval_steps: int = Field(40, gt=1, description="ODE steps for evaluation samples.")
    timestep_fraction: float = Field(0.99, gt=0, le=1, description="Train on the first floor(fraction x steps) steps.")
    cfg_scale: float = Field(4.5, ge=0, description="Guidance scale of the policy during rollouts.")
    inner_epochs: int = Field(1, ge=1, description="Optimizer steps taken on each batch of rollouts (the first "
                              "of them samples the rollouts with the policy of that moment, the old policy).")
    shared_noise: bool = Field(False, description="The G images of a group start from the same noise "
                               "(DanceGRPO); false: independent noise.")
    gold: Gold | None = GOLD

    def extra_ops(self) -> Iterator[OpSpec]:
        yield from super().extra_ops()
        yield OpSpec("reward", {"reward": self.reward.kind}, ("reward",))
        yield from gold_ops(self)

    def holds_frozen_copy(self) -> bool:
        """Its reference (for the KL) is a frozen copy of the start, unless LoRA switches the adapter off instead."""
        return self.kl_beta > 0 and self.lora is None

    def findings(self, spec) -> Iterator[Note]:
        yield from super().findings(spec)
        yield from reward_notes(self.reward, self.data, ("reward",))
        yield from gold_notes(self)
        if int(self.timestep_fraction * self.sampling_steps) < 1:
            yield Note(("timestep_fraction",), "trains on no step: raise timestep_fraction or sampling_steps")
        if self.train.global_batch % self.group_size:
            yield Note(("train", "global_batch"), f"global_batch {self.train.global_batch} must hold whole groups of "
                       f"group_size {self.group_size}")


class DPOPairs(Block):
    kind: Literal["generated"] = Field("generated", description="Pairs sampled from the starting model and ranked by a reward.")
    reward: Reward = Field(description="Ranks the two images of a pair.")
    num_pairs: int = Field(1000, gt=0, description="Pairs to generate (once, cached).")
    sampling_steps: int = Field(28, gt=0, description="Sampler steps.")


class JsonlPairs(Block):
    kind: Literal["jsonl"] = Field("jsonl", description="Pairs from a file: one JSON object per line with caption, winner, loser paths.")
    path: LocalPath = Field(description="The .jsonl file.")


Pairs = tagged(DPOPairs, JsonlPairs)


class DiffusionDPO(StageBase):
    """Diffusion-DPO (Wallace et al. 2023) in flow-matching form: on preference pairs, the policy's flow-matching
    error on the preferred image, relative to the frozen reference's, is pushed below the same difference on the
    rejected one through -log sigmoid(-beta (...)); the first loss is log 2 (policy = reference)."""

    needs_start: ClassVar[bool] = True
    reads: ClassVar[tuple[str, ...]] = ("reference",)
    objective: ClassVar[str] = "diffusion_dpo"
    generates: ClassVar[bool] = True

    kind: Literal["diffusion_dpo"] = Field("diffusion_dpo", description="Diffusion-DPO in flow form (velocity errors, shared t and noise per pair).")
    reference: str | None = Field(None, description="Frozen reference stage; omitted: the `from` stage.")
    beta: float = Field(5000.0, gt=0, description="DPO beta (reference launchers: 5000; sweep 1000-5000 for flows).")
    pairs: Pairs = Field(description="Preference pairs.")
    gold: Gold | None = GOLD

    def extra_ops(self) -> Iterator[OpSpec]:
        yield from super().extra_ops()
        params = {"pairs": self.pairs.kind}
        if self.pairs.kind == "generated":
            params.update(num_pairs=self.pairs.num_pairs, reward=self.pairs.reward.kind)
        yield OpSpec("pairs", params, ("pairs",))
        yield from gold_ops(self)

    def findings(self, spec) -> Iterator[Note]:
        yield from super().findings(spec)
        if self.pairs.kind == "generated":
            yield from reward_notes(self.pairs.reward, self.data, ("pairs", "reward"))
        yield from gold_notes(self)
