"""Data parallelism: which process this is, and the few collectives training needs.

One process per device (GPU, or a CPU slot with gloo). Every rank builds the same model, reads its
own slice of each global batch (runtime/data/epochs.split), and torch's DistributedDataParallel
averages the gradients (starting from rank 0's weights); rank 0 alone writes checkpoints, logs,
samples and the exported model. With one process every collective is a no-op, so the
single-process path is the plain one.
"""
from __future__ import annotations

import datetime
import gc
import itertools
import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

# How long a rank waits in a collective (the gradient all-reduce, the loss sum) for the others: a rank that
# hangs ends the run within it. Rank 0's own work (checkpoints, sample grids, pairs, evaluation, export) is
# waited for at barriers instead, which go through the rendezvous store and allow BARRIER_TIMEOUT.
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=30)
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
            index = gpu_index(self.local_rank, torch.cuda.device_count())
            torch.cuda.set_device(index)
            return torch.device("cuda", index)
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
        """Every rank waits for the others, however long rank 0's own work takes (up to BARRIER_TIMEOUT)."""
        if not self.active:
            return
        if _STORE is None:  # a process group someone else made
            dist.barrier()
            return
        key = f"flowspec/barrier/{next(_BARRIERS)}"
        if _STORE.add(key, 1) == self.world:  # the last to arrive lets everyone go
            _STORE.set(key + "/open", b"1")
        _STORE.wait([key + "/open"], BARRIER_TIMEOUT)


class _ObjectiveModule(nn.Module):
    """The trainable modules as one module whose forward is the stage's objective (for DDP's hooks)."""

    def __init__(self, modules: dict[str, nn.Module], objective):
        super().__init__()
        self.parts = nn.ModuleDict(modules)
        self.objective = objective

    def forward(self, step: int, micro: int):
        return self.objective(step, micro)


SINGLE = Distributed()
_STORE: dist.Store | None = None  # the rendezvous store, also used for barriers
_BARRIERS = itertools.count()  # every rank passes the same barriers in the same order


def from_environment(collective_timeout: datetime.timedelta = COLLECTIVE_TIMEOUT) -> Distributed:
    """The process group described by RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT (torchrun, `--nproc`,
    or a SLURM job through submitit's TorchDistributedEnvironment); a single process when WORLD_SIZE is unset."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return SINGLE
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    context = Distributed(rank=rank, world=world, local_rank=local_rank)
    if not dist.is_initialized():
        global _STORE
        host = os.environ.get("MASTER_ADDR", "")
        resolve_rendezvous_host(host)
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(gpu_index(local_rank, torch.cuda.device_count()))
        _STORE = dist.TCPStore(host, int(os.environ["MASTER_PORT"]), world, is_master=rank == 0,
                               timeout=collective_timeout)
        dist.init_process_group(backend, store=_STORE, rank=rank, world_size=world, timeout=collective_timeout)
    return context


def gpu_index(local_rank: int, visible: int) -> int:
    """The GPU of the task with this local rank (SLURM_LOCALID in a job): its own index when the task sees all of
    its node's GPUs (SLURM's job-wide gres), the only one when SLURM binds one GPU per task (--gpus-per-task,
    gpu-bind), which CUDA_VISIBLE_DEVICES then narrows to device 0."""
    return local_rank if local_rank < visible else 0


def resolve_rendezvous_host(host: str) -> None:
    """Fail at once, naming the host, when rank 0's address does not resolve here: torch would otherwise retry
    the connection for the whole process-group timeout and then report a socket timeout."""
    try:
        socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError) as exc:
        where = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
        raise RuntimeError(f"the rendezvous host {host!r} (MASTER_ADDR: rank 0's node, the first of the job's node "
                           f"list) does not resolve on {where}: {exc}. Every node must resolve the others' names "
                           "(DNS or /etc/hosts).") from None


def shutdown(context: Distributed, clean: bool = True) -> None:
    """Leave the process group, on every path out of a worker. A group still alive at interpreter exit can
    abort the process (gloo: "terminate called without an active exception"; 6 exits in 10 after a timed-out
    collective, about 1 in 50 finished 2-process runs), so what still holds it goes first: the trainer's
    DistributedDataParallel lives in a reference cycle with the stage's objective, which only the collector
    frees. A finished run waits for every rank before leaving; after a failure the others may never come."""
    global _STORE
    if not (context.active and dist.is_initialized()):
        return
    gc.collect()
    if clean:
        context.barrier()
    dist.destroy_process_group()
    _STORE = None
