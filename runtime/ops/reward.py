"""Op `reward`: the stage's reward, built once (a CLIP folder is loaded here, a plugin imported) and wrapped
in a Scorer that batches, checks and caches (runtime/rewards); the starting model's reward on the
evaluation's prompts and seeds is measured here, the trained model's by `evaluate`."""
from __future__ import annotations

from ..rewards import Scorer, build_reward
from . import op, spec_dir
from .context import StageContext


@op("reward")
def reward(ctx: StageContext, params: dict) -> None:
    use_reward(ctx, ctx.stage.reward)


def use_reward(ctx: StageContext, block) -> Scorer:
    """The stage's scorer for `block` (also Diffusion-DPO's pair ranking), and the start's score."""
    ctx.reward = Scorer(build_reward(block, spec_dir(ctx.plan) if ctx.plan is not None else None))
    if ctx.dist.main:
        from .evaluate import reward_on_eval
        from .train import isolated

        how = "differentiable" if ctx.reward.reward.differentiable else "not differentiable"
        start = ctx.results["reward_start"] = isolated(reward_on_eval)(ctx)
        print(f"[{ctx.label}] reward: {block.kind} ({how}); the starting model scores {start['mean']:.4g} "
              f"(std {start['std']:.4g}) on {start['items']} evaluation items", flush=True)
    return ctx.reward
