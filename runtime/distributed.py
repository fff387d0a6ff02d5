"""Data parallelism: which process this is, and the few collectives training needs.

One process per device (GPU, or a CPU slot with gloo). Every rank builds the same model from the
same seed, reads its own slice of each global batch (runtime/data/epochs.split) and averages
gradients with the others after the last micro-batch of a step; rank 0 alone writes checkpoints,
logs, samples and the exported model. With one process every collective is a no-op, so the
single-process path is the plain one.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

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
    def average_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """grad <- mean over ranks, in flat buckets (one all_reduce per ~25 MB, as DDP buckets them)."""
        if not self.active:
            return
        for param in params:
            if param.grad is None:  # a module unused this step still takes part in the average
                param.grad = torch.zeros_like(param)
        for bucket in _buckets([p.grad for p in params], 25 * 2**20):
            flat = torch.cat([g.reshape(-1) for g in bucket])
            dist.all_reduce(flat)
            flat /= self.world
            offset = 0
            for grad in bucket:
                grad.copy_(flat[offset:offset + grad.numel()].view_as(grad))
                offset += grad.numel()

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        """Element-wise sum over ranks (losses, the stop flag): one small all_reduce."""
        if not self.active:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def broadcast_parameters(self, modules) -> None:
        """Start every rank from rank 0's weights (they are built identically; this makes it a fact)."""
        if not self.active:
            return
        for module in modules:
            for tensor in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(tensor.data, src=0)

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def _buckets(tensors: list[torch.Tensor], limit: int) -> list[list[torch.Tensor]]:
    out, current, size = [], [], 0
    for tensor in tensors:
        nbytes = tensor.numel() * tensor.element_size()
        if current and (size + nbytes > limit or tensor.dtype != current[0].dtype or tensor.device != current[0].device):
            out.append(current)
            current, size = [], 0
        current.append(tensor)
        size += nbytes
    return out + ([current] if current else [])


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
