"""Frozen modules kept in CPU memory and put on the compute device only while they run (train.offload_frozen).

A frozen module's weights never change, so nothing is copied back: its CPU tensors stay where they are, the
device copies are made on the way in and dropped on the way out (pinned, the copy to a GPU overlaps).
"""
from __future__ import annotations

import functools

import torch
from torch import nn


class CPUOffload:
    """A context in which `module`'s parameters and buffers are on `device`; outside it they are in CPU memory.
    Re-entrant: a call inside another (the codec's decode inside a sampling call) copies once. The CPU tensors are
    swapped out for their device copies and back, not overwritten: tied weights stay tied, nothing is lost."""

    def __init__(self, module: nn.Module, device: torch.device):
        self.module, self.device, self.depth = module, torch.device(device), 0
        self.loads = 0  # times its weights were copied to the device
        module.to("cpu")
        pin = self.device.type == "cuda" and torch.cuda.is_available()
        self.slots = []  # (owner's parameter or buffer dict, name, the CPU tensor)
        for owner in module.modules():
            for table in (owner._parameters, owner._buffers):
                for name, t in table.items():
                    if t is not None:
                        if pin:
                            t.data = t.data.pin_memory()
                        self.slots.append((table, name, t))

    def __enter__(self) -> "CPUOffload":
        if self.depth == 0:
            copies: dict[int, torch.Tensor] = {}  # tied weights: one copy
            for table, name, home in self.slots:
                if id(home) not in copies:
                    moved = home.detach().to(self.device, non_blocking=True)
                    copies[id(home)] = nn.Parameter(moved, requires_grad=False) if isinstance(home, nn.Parameter) \
                        else moved
                table[name] = copies[id(home)]
            self.loads += 1
        self.depth += 1
        return self

    def __exit__(self, *exc) -> None:
        self.depth -= 1
        if self.depth == 0:
            for table, name, home in self.slots:
                table[name] = home


def offload_calls(module: nn.Module, device: torch.device, owner: nn.Module | None = None,
                  methods: tuple[str, ...] = ("forward",)) -> CPUOffload:
    """Keep `module` in CPU memory; each call of `owner`'s `methods` (owner defaults to the module: a VAE's
    encode and decode, a denoiser's velocity) runs with its weights on `device`. The methods are shadowed on the
    instance, so a call from inside the class (forward calling velocity) goes through them too."""
    offload = CPUOffload(module, device)
    owner = module if owner is None else owner
    for name in methods:
        original = getattr(owner, name)

        @functools.wraps(original)
        def on_device(*args, _original=original, **kwargs):
            with offload:
                return _original(*args, **kwargs)
        object.__setattr__(owner, name, on_device)
    object.__setattr__(module, "offload", offload)
    return offload


def execution_device(module: nn.Module) -> torch.device:
    """Where `module` computes: its offload's device, else where its parameters are."""
    offload = getattr(module, "offload", None)
    if isinstance(offload, CPUOffload):
        return offload.device
    return next(module.parameters()).device
