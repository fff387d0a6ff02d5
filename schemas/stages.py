"""`stages:` the chain. Each kind is one tagged model; every training stage may carry a LoRA.

The blocks `data`, `timesteps`, `optimizer`, `train` and `executor` of a stage are the spec's root
blocks deep-merged with the stage's own (the compiler's `inherit` pass), so the runtime always sees
complete blocks.
"""
from typing import Literal

from pydantic import Field, model_validator

from .base import NAME_PATTERN, Block, Probability, tagged
from .data import Data, Source
from .executor import Executor
from .lora import LoRA
from .optim import Optimizer
from .rewards import PromptEnhancer, Reward, VisionEncoder
from .timesteps import Timesteps
from .train import Train

INHERITED_BLOCKS = ("data", "timesteps", "optimizer", "train", "executor")
# Fields naming an earlier stage whose weights this one reads.
UPSTREAM_FIELDS = ("from", "teacher", "reference")


class StageBase(Block):
    name: str = Field(pattern=NAME_PATTERN, description="Unique stage name (lower case, digits, _).")
    from_: str | None = Field(None, alias="from", description="Start from an earlier stage (its name) or a local "
                              "path (anything with a '/'); omitted: fresh weights per model.init.")
    steps: int = Field(gt=0, description="Optimizer steps of this stage.")
    seed: int | None = Field(None, description="Stage seed; omitted: derived from the spec seed and the stage name.")
    lora: LoRA | None = Field(None, description="Train low-rank adapters instead of all weights.")
    prompt_enhancer: PromptEnhancer | None = Field(None, description="Rewrites prompts this stage generates from.")
    data: Data = Field(description="Data, merged over the spec's `data`.")
    timesteps: Timesteps = Field(description="Timestep sampling, merged over the spec's `timesteps`.")
    optimizer: Optimizer = Field(description="Optimizer, merged over the spec's `optimizer`.")
    train: Train = Field(description="Training settings, merged over the spec's `train`.")
    executor: Executor = Field(description="Where it runs, merged over the spec's `executor`.")

    def upstream(self) -> dict[str, str]:
        """{field: stage name} of the earlier stages this one reads (paths are not stages)."""
        refs = {"from": self.from_, "teacher": getattr(self, "teacher", None),
                "reference": getattr(self, "reference", None)}
        return {k: v for k, v in refs.items() if v is not None and "/" not in v}


# ----------------------------------------------------------------------------- pre/post-training
class Repa(Block):
    kind: Literal["repa"] = Field("repa", description="REPA: align a block's tokens with a frozen vision encoder's patch features.")
    encoder: VisionEncoder = Field(default_factory=dict, validate_default=True, description="Frozen target encoder.")
    depth: int = Field(8, gt=0, description="Align the output of this transformer block (1-based; REPA: 8 of 28).")
    lambda_: float = Field(0.5, alias="lambda", ge=0, description="Coefficient of the REPA loss.")
    projector_dim: int = Field(2048, gt=0, description="Hidden width of the 3-layer MLP projector.")


# Extra loss terms, a union tagged by kind (REPA for now).
AuxLoss = tagged(Repa)


class Pretrain(StageBase):
    kind: Literal["pretrain"] = Field("pretrain", description="Flow-matching pre-training.")
    aux_losses: list[AuxLoss] = Field(default_factory=list, description="Extra loss terms (REPA).")


class Finetune(StageBase):
    kind: Literal["finetune"] = Field("finetune", description="Continued training or supervised fine-tuning on a curated subset.")
    aux_losses: list[AuxLoss] = Field(default_factory=list, description="Extra loss terms (REPA).")


class Prior(Block):
    class_prompt: str = Field(description="Prompt of the class, e.g. 'a photo of a star'.")
    num_images: int = Field(100, gt=0, description="Class images generated once by the frozen starting model.")
    lambda_: float = Field(1.0, alias="lambda", ge=0, description="Weight of the prior-preservation loss.")
    sampling_steps: int = Field(28, gt=0, description="Sampler steps for the class images.")


class DreamBooth(StageBase):
    kind: Literal["dreambooth"] = Field("dreambooth", description="DreamBooth: bind a rare identifier to a subject, with prior preservation.")
    instance_data: Source = Field(description="The few subject images.")
    instance_prompt: str = Field(description="Prompt with the identifier, e.g. 'a photo of sks star'.")
    identifier: str = Field("sks", description="The rare token standing for the subject.")
    prior: Prior | None = Field(None, description="Prior preservation; null: plain fine-tuning on the subject.")

    @model_validator(mode="after")
    def _identifier_in_prompt(self):
        if self.identifier not in self.instance_prompt.split():
            raise ValueError(f"instance_prompt {self.instance_prompt!r} does not contain the identifier {self.identifier!r}")
        return self


# ----------------------------------------------------------------------------------- preference
class RewardFeedback(StageBase):
    kind: Literal["reward_feedback"] = Field("reward_feedback", description="ReFL: back-propagate a differentiable reward through one late sampler step.")
    reward: Reward = Field(description="Reward model; must be differentiable.")
    sampling_steps: int = Field(40, gt=1, description="Steps of the rollout sampler.")
    grad_steps: tuple[int, int] = Field((30, 39), description="The step with gradient is drawn uniformly from this range (0-based).")
    grad_scale: float = Field(1e-3, gt=0, description="Loss scale of the reward term.")
    reward_margin: float = Field(2.0, description="Loss is ReLU(margin - reward).")
    pretrain_loss_weight: float = Field(1.0, ge=0, description="Weight of the interleaved flow-matching loss on real data.")

    @model_validator(mode="after")
    def _range(self):
        lo, hi = self.grad_steps
        if not 0 <= lo <= hi < self.sampling_steps:
            raise ValueError(f"grad_steps [{lo}, {hi}] must lie within 0..{self.sampling_steps - 1}")
        return self


class FlowGRPO(StageBase):
    kind: Literal["flow_grpo"] = Field("flow_grpo", description="Flow-GRPO: group-relative policy optimisation over SDE rollouts.")
    reward: Reward = Field(description="Reward model (differentiability not needed).")
    group_size: int = Field(24, ge=2, description="Images per prompt (G).")
    noise_level: float = Field(0.7, ge=0, description="SDE noise level a: sigma_t = a sqrt(t / (1 - t)).")
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


class DPOPairs(Block):
    kind: Literal["generated"] = Field("generated", description="Pairs sampled from the starting model and ranked by a reward.")
    reward: Reward = Field(description="Ranks the two images of a pair.")
    num_pairs: int = Field(1000, gt=0, description="Pairs to generate (once, cached).")
    sampling_steps: int = Field(28, gt=0, description="Sampler steps.")


class JsonlPairs(Block):
    kind: Literal["jsonl"] = Field("jsonl", description="Pairs from a file: one JSON object per line with caption, winner, loser paths.")
    path: str = Field(description="The .jsonl file.")


Pairs = tagged(DPOPairs, JsonlPairs)


class DiffusionDPO(StageBase):
    kind: Literal["diffusion_dpo"] = Field("diffusion_dpo", description="Diffusion-DPO in flow form (velocity errors, shared t and noise per pair).")
    reference: str | None = Field(None, description="Frozen reference stage; omitted: the `from` stage.")
    beta: float = Field(5000.0, gt=0, description="DPO beta (reference launchers: 5000; sweep 1000-5000 for flows).")
    pairs: Pairs = Field(description="Preference pairs.")


# --------------------------------------------------------------------------------- distillation
class DistillBase(StageBase):
    teacher: str | None = Field(None, description="Teacher stage; omitted: the `from` stage.")


class ProgressiveDistill(DistillBase):
    kind: Literal["progressive_distill"] = Field("progressive_distill", description="Progressive distillation: one student step matches two teacher steps.")
    teacher_steps: int = Field(32, ge=2, description="Sampler steps of the first teacher; halved every round.")
    rounds: int = Field(3, gt=0, description="Halvings; the stage's steps are split evenly across rounds.")

    @model_validator(mode="after")
    def _rounds(self):
        if self.teacher_steps % (2 ** self.rounds):
            raise ValueError(f"teacher_steps {self.teacher_steps} cannot be halved {self.rounds} times")
        return self


class Reflow(DistillBase):
    kind: Literal["reflow"] = Field("reflow", description="Reflow / InstaFlow: flow matching on (noise, teacher sample) pairs.")
    num_pairs: int = Field(10_000, gt=0, description="Noise-sample pairs generated by the teacher ODE (cached).")
    teacher_steps: int = Field(50, gt=0, description="Teacher ODE steps per pair.")
    cfg_scale: float = Field(4.0, ge=0, description="Guidance inside the teacher.")


class ConsistencyDistill(DistillBase):
    kind: Literal["consistency_distill"] = Field("consistency_distill", description="Latent consistency distillation (LCM) in flow form.")
    num_timesteps: int = Field(50, ge=2, description="Discretisation of the teacher's grid (LCM: 50 DDIM steps).")
    skip: int = Field(20, gt=0, description="Skipping step k, on the 1000-step grid.")
    w_range: tuple[float, float] = Field((5.0, 15.0), description="Guidance scale w drawn uniformly from this range.")
    ema_decay: float = Field(0.95, gt=0, le=1, description="Decay of the target network.")
    loss: Literal["l2", "huber"] = Field("l2", description="Distance between student and target.")
    huber_c: float = Field(1e-3, gt=0, description="Pseudo-Huber c.")


class Discriminator(Block):
    encoder: VisionEncoder = Field(default_factory=dict, validate_default=True, description="Frozen feature network.")
    r1_weight: float = Field(1e-5, ge=0, description="R1 gradient penalty weight.")
    lr: float = Field(1e-4, gt=0, description="Learning rate of the discriminator heads.")


class AdversarialDistill(DistillBase):
    kind: Literal["adversarial_distill"] = Field("adversarial_distill", description="ADD: adversarial loss plus teacher distillation, 1-4 step student.")
    student_timesteps: list[Probability] = Field(
        default_factory=lambda: [1.0, 0.75, 0.5, 0.25], min_length=1, description="Noise levels t the student is trained at.")
    distill_weight: float = Field(2.5, ge=0, description="lambda of the distillation loss.")
    discriminator: Discriminator = Field(default_factory=dict, validate_default=True, description="Discriminator.")


Stage = tagged(Pretrain, Finetune, DreamBooth, RewardFeedback, FlowGRPO, DiffusionDPO,
               ProgressiveDistill, Reflow, ConsistencyDistill, AdversarialDistill)
STAGE_KINDS = ("pretrain", "finetune", "dreambooth", "reward_feedback", "flow_grpo", "diffusion_dpo",
               "progressive_distill", "reflow", "consistency_distill", "adversarial_distill")
