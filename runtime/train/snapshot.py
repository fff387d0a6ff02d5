"""A copy of a model's trainable weights kept as buffers: checkpointed with the objective's modules, never
optimized. Flow-GRPO keeps its old policy in one, progressive distillation the teacher of the current round,
consistency distillation its EMA target network."""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn
from torch.distributed.fsdp import FSDPModule


class WeightSnapshot(nn.Module):
    """The trainable weights of `modules` at the last save(), as buffers; loaded() swaps them in for a while."""

    def __init__(self, modules: dict[str, nn.Module]):
        super().__init__()
        self.sources = modules
        self.bind()

    def bind(self) -> None:
        """Read the trainable parameters and keep a copy of each; again after train.sharding replaced them with
        their shards (DTensors): the copies are shards too."""
        self.params = {f"{m}.{n}": p for m, module in self.sources.items() for n, p in module.named_parameters()
                       if p.requires_grad}
        for name, param in self.params.items():
            self.register_buffer(name.replace(".", "__"), param.detach().clone())
        self.sharded = [part for module in self.sources.values() for part in module.modules()
                        if isinstance(part, FSDPModule)]

    def kept(self) -> list[torch.Tensor]:
        return [self.get_buffer(name.replace(".", "__")) for name in self.params]

    def save(self) -> None:
        with torch.no_grad():
            for buffer, param in zip(self.kept(), self.params.values()):
                buffer.copy_(param)

    @contextmanager
    def loaded(self):
        """The kept weights in the model for the block (no autograd through them), the live ones after.

        Inside an autocast region torch keeps the low-precision copy of each weight for the whole region and
        does not see in-place copies into the weight, so the cache is emptied on the way in and out: else
        the block would run on the live weights' copies, or the live forward after it on the kept ones. Sharded
        weights are swapped in their shards, with FSDP's whole copies dropped on the way in and out alike."""
        live = {name: param.detach().clone() for name, param in self.params.items()}
        torch.clear_autocast_cache()
        self.reshard()
        with torch.no_grad():
            for buffer, param in zip(self.kept(), self.params.values()):
                param.copy_(buffer)
        try:
            yield
        finally:
            self.reshard()
            with torch.no_grad():
                for name, param in self.params.items():
                    param.copy_(live[name])
            torch.clear_autocast_cache()

    def reshard(self) -> None:
        """Under train.sharding: drop the whole weights FSDP keeps after a forward (the root module's), so that
        the next forward gathers the shards, which a swap changes."""
        for part in self.sharded:
            part.reshard()
