"""Data parallelism: which process this is, and the few collectives training needs.

One process per device (GPU, or a CPU slot with gloo). Every rank builds the same model, reads its
own slice of each global batch (runtime/data/epochs.split), and torch's DistributedDataParallel
averages the gradients (starting from rank 0's weights); rank 0 alone writes checkpoints, logs,
samples and the exported model. With one process every collective is a no-op, so the
single-process path is the plain one.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

# Rank 0 evaluates and exports while the others wait at the stage's final barrier.
BARRIER_TIMEOUT = datetime.timedelta(hours=6)


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def device(self) -> torch.device:
        if torch.cuda.is_available():
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    # ------------------------------------------------------------------------------ collectives
    def data_parallel(self, modules: dict[str, nn.Module], objective, device: torch.device):
        """`objective(step, micro)` as the forward of torch's DistributedDataParallel over the trainable
        modules: their gradients are averaged across ranks in buckets while the backward pass of the
        last micro-batch runs (earlier ones run under `no_sync`). None with one process."""
        if not self.active:
            return None
        from torch.nn.parallel import DistributedDataParallel

        # find_unused_parameters: a step may leave a module without gradient (every caption dropped).
        # gradient_as_bucket_view: gradients live in the all-reduce buckets, not copied into them (memory, a copy).
        return DistributedDataParallel(_ObjectiveModule(modules, objective), find_unused_parameters=True,
                                       gradient_as_bucket_view=True,
                                       device_ids=[device.index] if device.type == "cuda" else None)

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        """Element-wise sum over ranks (losses, the stop flag): one small all_reduce."""
        if not self.active:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


class _ObjectiveModule(nn.Module):
    """The trainable modules as one module whose forward is the stage's objective (for DDP's hooks)."""

    def __init__(self, modules: dict[str, nn.Module], objective):
        super().__init__()
        self.parts = nn.ModuleDict(modules)
        self.objective = objective

    def forward(self, step: int, micro: int):
        return self.objective(step, micro)


SINGLE = Distributed()


def from_environment() -> Distributed:
    """The process group described by RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT (torchrun, `--nproc`,
    or a SLURM job through submitit's TorchDistributedEnvironment); a single process when WORLD_SIZE is unset."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return SINGLE
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    context = Distributed(rank=rank, world=world, local_rank=local_rank)
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend, rank=rank, world_size=world, timeout=BARRIER_TIMEOUT)
    return context


def shutdown(context: Distributed) -> None:
    if context.active and dist.is_initialized():
        dist.destroy_process_group()
