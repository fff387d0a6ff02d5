"""Rewards (algorithms.md sections 5-7): one interface for every reward a preference stage names.

A reward maps items (images (N, 3, H, W) in [-1, 1], or 2-D points (N, 2)) and their prompts to one float
per item. `Scorer` wraps it: it scores in batches, checks what comes back (one finite float per item; a
failure, a NaN or an inf stops the stage with the item named, nothing is averaged silently), and keeps the
scores of items it has seen, keyed by (item hash, reward identity), when no gradient is asked for.
"""
from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from typing import Callable

import torch
from torch import Tensor

VERSION = 1  # part of every reward's identity: a change to a builtin's arithmetic must not reuse old scores
CACHE_ITEMS = 200_000  # scores kept (the oldest go first): a long GRPO run scores new items every step
REWARDS: dict[str, Callable] = {}  # kind -> class taking the spec's reward block


class RewardError(RuntimeError):
    """A reward failed, or gave something other than one finite float, on a named item."""


def register_reward(kind: str):
    def wrap(cls):
        REWARDS[kind] = cls
        return cls

    return wrap


class Reward:
    """A builtin or plugin reward: `score(items, prompts)` -> (N,) tensor; gradients reach `items` when
    `differentiable`."""

    def __init__(self, block, spec_dir: str | None = None):
        self.block = block
        self.kind = block.kind
        self.differentiable = bool(block.differentiable)

    def identity(self) -> str:
        return json.dumps({"reward": self.block.model_dump(mode="json", by_alias=True), "version": VERSION},
                          sort_keys=True)

    def score(self, items: Tensor, prompts: list[str]) -> Tensor:
        raise NotImplementedError


def build_reward(block, spec_dir: str | None = None) -> Reward:
    from . import builtin, clip  # noqa: F401 - they register the builtin kinds

    return REWARDS[block.kind](block, spec_dir)


class Scorer:
    """Batched, checked and cached scoring with one reward."""

    def __init__(self, reward: Reward, batch_size: int = 64):
        self.reward, self.batch_size = reward, batch_size
        self.identity = reward.identity()
        self.cache: OrderedDict[str, float] = OrderedDict()
        self.hits = self.misses = 0

    def __call__(self, items: Tensor, prompts: list[str], grad: bool = False) -> Tensor:
        """One float per item, as a tensor on the items' device; with `grad`, differentiable with respect to
        the items (never cached: a cached score has no graph)."""
        if len(prompts) != len(items):
            raise ValueError(f"{len(items)} items but {len(prompts)} prompts")
        if grad:
            if not self.reward.differentiable:
                raise RewardError(f"reward {self.reward.kind} is not differentiable")
            return torch.cat([self._checked(items[i:i + self.batch_size], prompts[i:i + self.batch_size], i)
                              for i in range(0, len(items), self.batch_size)]) if len(items) else items.new_zeros(0)
        with torch.no_grad():
            return self._cached(items.detach(), prompts)

    def _cached(self, items: Tensor, prompts: list[str]) -> Tensor:
        keys = [self.key(item, prompt) for item, prompt in zip(items, prompts)]
        todo = [i for i, k in enumerate(keys) if k not in self.cache]
        self.hits += len(keys) - len(todo)
        self.misses += len(todo)
        for start in range(0, len(todo), self.batch_size):
            rows = todo[start:start + self.batch_size]
            scores = self._checked(items[rows], [prompts[i] for i in rows], rows)
            for i, value in zip(rows, scores.tolist()):
                self.cache[keys[i]] = value
        out = torch.tensor([self.cache[k] for k in keys], dtype=torch.float32, device=items.device)
        while len(self.cache) > CACHE_ITEMS:
            self.cache.popitem(last=False)
        return out

    def key(self, item: Tensor, prompt: str) -> str:
        digest = hashlib.sha256(item.float().cpu().contiguous().numpy().tobytes())
        digest.update(json.dumps([list(item.shape), prompt, self.identity]).encode())
        return digest.hexdigest()

    def _checked(self, items: Tensor, prompts: list[str], rows) -> Tensor:
        """The reward on one batch; `rows` (a list, or the first row's index) names items in errors."""
        index = list(rows) if isinstance(rows, list) else list(range(rows, rows + len(items)))
        try:
            out = self.reward.score(items, prompts)
        except Exception as exc:  # noqa: BLE001 - a user reward's failure is reported with the item it failed on
            raise RewardError(self._culprit(items, prompts, index, exc)) from exc
        out = torch.as_tensor(out, dtype=torch.float32, device=items.device) if not torch.is_tensor(out) else out
        if out.shape != (len(items),):
            raise RewardError(f"reward {self.reward.kind} returned shape {tuple(out.shape)} for {len(items)} items: "
                              f"it must return one float per item, shape ({len(items)},)")
        bad = (~torch.isfinite(out.detach())).nonzero().flatten().tolist()
        if bad:
            i = bad[0]
            raise RewardError(f"reward {self.reward.kind} gave {out[i].item()} on item {index[i]} (prompt "
                              f"{prompts[i]!r}){f' and {len(bad) - 1} more' if len(bad) > 1 else ''}")
        return out.float()

    def _culprit(self, items: Tensor, prompts: list[str], index: list[int], exc: Exception) -> str:
        """The first item the reward fails on alone (the batch's failure when none does)."""
        for i in range(len(items)):
            try:
                self.reward.score(items[i:i + 1], prompts[i:i + 1])
            except Exception as one:  # noqa: BLE001
                return f"reward {self.reward.kind} failed on item {index[i]} (prompt {prompts[i]!r}): " \
                       f"{type(one).__name__}: {one}"
        return f"reward {self.reward.kind} failed on a batch of {len(items)}: {type(exc).__name__}: {exc}"
