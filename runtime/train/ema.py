"""Exponential moving average of the trainable weights, as configured: no hidden warm-up unless asked."""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn
from torch.distributed.tensor import DTensor

from .sharding import full, shard_like


class EMA:
    """shadow <- d shadow + (1 - d) param every `every` steps, with d = decay, or with warm-up
    d = min(decay, 1 - (1 + step)^(-2/3))."""

    def __init__(self, modules: dict[str, nn.Module], decay: float, warmup: bool = False, every: int = 1):
        self.modules, self.decay, self.warmup, self.every = modules, decay, warmup, every
        self.shadow = {name: {k: p.detach().clone().float() for k, p in m.named_parameters() if p.requires_grad}
                       for name, m in modules.items()}
        # Flat lists for one multi-tensor update per step (the shadow's tensors are updated in place, so the
        # lists stay valid across load_state_dict).
        pairs = [(self.shadow[name][k], p.detach()) for name, m in modules.items()
                 for k, p in m.named_parameters() if k in self.shadow[name]]
        # Sharded and whole tensors in separate lists (a multi-tensor kernel takes one kind; fsdp replicates some).
        kinds = [[(s, p) for s, p in pairs if isinstance(p, DTensor) == sharded] for sharded in (False, True)]
        self._lists = [([s for s, _ in kind], [p for _, p in kind]) for kind in kinds if kind]
        self._cast = any(p.dtype != torch.float32 for _, p in pairs)
        self.whole: dict | None = None  # sharded weights (train.sharding): the shadow's whole tensors, while gathered

    def decay_at(self, step: int) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, 1.0 - (1.0 + step) ** (-2.0 / 3.0))

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Call after optimizer step `step` (1-based)."""
        if step % self.every:
            return
        d = self.decay_at(step)
        # The same arithmetic as shadow.mul_(d).add_(param, alpha=1 - d), one kernel per list on a GPU.
        for shadows, params in self._lists:
            torch._foreach_mul_(shadows, d)
            torch._foreach_add_(shadows, [p.float() for p in params] if self._cast else params, alpha=1.0 - d)

    @contextmanager
    def swapped_in(self):
        """Temporarily put the EMA weights into the modules (for samples and export)."""
        saved = {name: {k: p.detach().clone() for k, p in m.named_parameters() if k in self.shadow[name]}
                 for name, m in self.modules.items()}
        self._copy(self.whole or self.shadow)
        try:
            yield
        finally:
            self._copy(saved)

    @torch.no_grad()
    def _copy(self, source: dict[str, dict[str, torch.Tensor]]) -> None:
        for name, module in self.modules.items():
            for key, param in module.named_parameters():
                if key in source[name]:  # still a shard before FSDP's first forward: its part of the whole
                    value = source[name][key]
                    param.copy_(shard_like(value, param) if not isinstance(value, DTensor) else value)

    def gather(self, whole: bool = True) -> None:
        """Sharded weights (every rank): keep the shadow's whole tensors for `swapped_in`, or drop them."""
        self.whole = {name: {k: full(v) for k, v in tensors.items()} for name, tensors in self.shadow.items()} \
            if whole else None

    def state_dict(self) -> dict:
        """The shadow, whole (sharded weights: every rank calls it)."""
        return {"shadow": {name: {k: full(v) for k, v in tensors.items()} for name, tensors in self.shadow.items()}}

    def load_state_dict(self, state: dict) -> None:
        for name, tensors in state["shadow"].items():
            for key, value in tensors.items():
                target = self.shadow[name][key]
                target.copy_(shard_like(value, target))
