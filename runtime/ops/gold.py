"""Op `gold`: a held-out evaluation against reward hacking. Every `every` steps the export weights (EMA)
are scored with the gold reward on the evaluation's fixed prompts and seeds; the value is logged beside the
training reward and kept in gold.json. With stop_when_gold_drops K the stage finishes once gold has stayed
below its best for K evaluations in a row, and the weights of the best evaluation are what the stage
samples, evaluates and exports.

Every process evaluates (same weights, same seeds: the same decision, no message to agree on); the main
one writes. A resume keeps the history up to its checkpoint's step and evaluates the rest again, which,
resume being exact, gives the same values.
"""
from __future__ import annotations

import json

import torch
from safetensors.torch import load_file, save_file

from ..rewards import Scorer, build_reward
from . import op, spec_dir
from .context import StageContext

STATE = "gold.json"
BEST = "gold_best.safetensors"


@op("gold")
def gold(ctx: StageContext, params: dict) -> None:
    ctx.gold = GoldWatch(ctx)


class GoldWatch:
    def __init__(self, ctx: StageContext):
        self.ctx, self.block = ctx, ctx.stage.gold
        self.scorer = Scorer(build_reward(self.block.reward, spec_dir(ctx.plan)))
        self.path, self.best_path = ctx.run_dir / STATE, ctx.run_dir / BEST
        self.history: list[dict] = json.loads(self.path.read_text())["history"] if self.path.exists() else []

    def resume_at(self, step: int) -> None:
        """Forget evaluations after the checkpoint the loop resumed from: they are made again."""
        self.history = [h for h in self.history if h["step"] <= step]

    @property
    def best(self) -> dict | None:
        return max(self.history, key=lambda h: (h["gold"], -h["step"]), default=None)

    def drops(self) -> int:
        """Evaluations in a row since the best one."""
        best = self.best
        return 0 if best is None else sum(h["step"] > best["step"] for h in self.history)

    def should_finish(self, step: int) -> bool:
        """The loop's question after each step (and once after a resume)."""
        if step % self.block.every == 0 and step not in {h["step"] for h in self.history}:
            self.evaluate(step)
        limit = self.block.stop_when_gold_drops
        return limit is not None and self.drops() >= limit

    def evaluate(self, step: int) -> None:
        from .evaluate import reward_on_eval
        from .train import isolated

        ctx = self.ctx
        sharded = ctx.trainer is not None and ctx.trainer.shards is not None
        with ctx.weights_for_export():  # whole on every rank: each evaluates, all reach the same value
            value = isolated(reward_on_eval)(ctx, self.scorer)["mean"]
            new_best = self.best is None or value > self.best["gold"]
            if new_best and (ctx.dist.main or sharded):  # gathering shards takes every rank
                state = export_state(ctx)
                if ctx.dist.main:
                    save_file(state, str(self.best_path))
        self.history.append({"step": step, "gold": value})
        if ctx.dist.main:
            self.path.write_text(json.dumps({"reward": self.block.reward.kind, "history": self.history,
                                             "best": self.best}, indent=2))
            print(f"[{ctx.label}] gold {self.block.reward.kind} at step {step}: {value:.4g} (best {self.best['gold']:.4g} "
                  f"at step {self.best['step']})", flush=True)
            if ctx.wandb is not None:
                ctx.wandb.log({"gold": value}, step)

    def restore_best(self) -> int:
        """The best evaluation's weights into the model, in place of the trained (and EMA) ones: its step."""
        state = load_file(str(self.best_path), device=str(self.ctx.device))
        with torch.no_grad():
            for name, module in self.ctx.bundle.trainable_modules().items():
                for key, value in module.state_dict().items():
                    if f"{name}.{key}" in state:
                        value.copy_(state[f"{name}.{key}"])
        return self.best["step"]


def export_state(ctx: StageContext) -> dict:
    """What trains (under LoRA: the adapters), as the export would see it (the EMA's weights, when swapped in)."""
    from ..train.loop import trained_state

    trainer = ctx.trainer
    out = {}
    for name, module in ctx.bundle.trainable_modules().items():
        if trainer is not None and trainer.shards is not None:
            state = whole_state(trainer, name, module)
        else:
            state = trained_state(module)
        out.update({f"{name}.{key}": value.detach().to("cpu", copy=True).contiguous() for key, value in state.items()})
    return out


def whole_state(trainer, name: str, module) -> dict:
    """A sharded module's trained state, whole (collective), with the EMA's whole weights over it: FSDP's
    state_dict gives the shards, not the gathered views the EMA was swapped into."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    from ..train.sharding import FULL, trained_only

    state = trained_only(module, get_model_state_dict(module, options=FULL))
    ema = (trainer.ema.whole or {}).get(name, {}) if trainer.ema is not None else {}
    return {key: ema.get(key, value) for key, value in state.items()}
