"""Op `reward`: the stage's reward, built once (a CLIP folder is loaded here, a plugin imported) and wrapped
in a Scorer that batches, checks and caches (runtime/rewards)."""
from __future__ import annotations

from ..rewards import Scorer, build_reward
from . import op, spec_dir
from .context import StageContext


@op("reward")
def reward(ctx: StageContext, params: dict) -> None:
    block = ctx.stage.reward
    ctx.reward = Scorer(build_reward(block, spec_dir(ctx.plan) if ctx.plan is not None else None))
    if ctx.dist.main:
        from .evaluate import reward_on_eval
        from .train import isolated

        how = "differentiable" if ctx.reward.reward.differentiable else "not differentiable"
        # The starting model's reward on the evaluation's prompts and seeds: the end's is measured alike.
        start = ctx.results["reward_start"] = isolated(reward_on_eval)(ctx)
        print(f"[{ctx.label}] reward: {block.kind} ({how}); the starting model scores {start['mean']:.4g} "
              f"(std {start['std']:.4g}) on {start['items']} evaluation items", flush=True)
