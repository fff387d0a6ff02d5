"""train.sharding: fsdp. torch's FSDP2 over the trained modules, under the one training loop.

Each trained module is sharded block by block (the members of its outermost parameter-holding ModuleLists:
transformer blocks, UNet down / up blocks, the MLP's layers), then as a whole, over one mesh of every process:
a block's full weights exist only while it runs. Parameters, gradients and optimizer state are DTensors
holding a rank's shard; the loop's clipping, EMA and optimizer work on them unchanged.

Checkpoints stay what data parallelism writes: full tensors, gathered to rank 0, with the optimizer state in
its index order. So a stage resumes on any number of processes, sharded or not (resharding is loading).

Rank 0's own work needs whole weights: `Shards.gathered()` (every rank) all-gathers each block and keeps it
until the block leaves, and `Shards.plain()` hands back ordinary modules after training, for the stage's
sample, evaluate and export ops.
"""
from __future__ import annotations

import contextlib
import copy
import itertools

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_optimizer_state_dict,
                                                     set_model_state_dict, set_optimizer_state_dict)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import (CPUOffloadPolicy, FSDPModule, MixedPrecisionPolicy, OffloadPolicy, fully_shard,
                                    register_fsdp_forward_method)
from torch.distributed.tensor import DTensor, distribute_tensor

FULL = StateDictOptions(full_state_dict=True)
# What a checkpoint holds: rank 0 gets the full tensors on the CPU, the others nothing.
FULL_ON_RANK0 = StateDictOptions(full_state_dict=True, cpu_offload=True)


def blocks(module: nn.Module) -> list[nn.Module]:
    """The members of the outermost ModuleLists that hold parameters, in order."""
    found = []
    for child in module.children():
        if isinstance(child, nn.ModuleList):
            found += [block for block in child if next(block.parameters(), None) is not None]
        else:
            found += blocks(child)
    return found


def meta_copy(module: nn.Module) -> nn.Module:
    """The module with every parameter and buffer on the meta device: its structure, no memory."""
    memo = {}
    for name, tensor in itertools.chain(module.named_parameters(), module.named_buffers()):
        empty = torch.empty_like(tensor, device="meta")
        memo[id(tensor)] = nn.Parameter(empty, tensor.requires_grad) if isinstance(tensor, nn.Parameter) else empty
    return copy.deepcopy(module, memo)


class Shards:
    """The trained modules (or a frozen copy's), sharded in place over `world` processes (collective: every rank
    builds one); `offload`: the shards stay in CPU memory, each block's brought to the device for its forward."""

    def __init__(self, modules: dict[str, nn.Module], device: torch.device, world: int, bf16: bool,
                 offload: bool = False, replicated: dict[str, nn.Module] | None = None):
        self.skeletons = {name: meta_copy(module) for name, module in modules.items()}
        self.modules = modules
        # Trained modules kept whole on every rank, their gradients averaged (ADD's discriminator: small, and its
        # R1 penalty differentiates twice, which FSDP's hooks do not go through).
        self.replicated = replicated or {}
        mesh = init_device_mesh(device.type, (world,))
        # bf16 compute, fp32 gradient reduction and fp32 weights (the optimizer's master copy).
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else \
            MixedPrecisionPolicy()
        where = CPUOffloadPolicy(pin_memory=device.type == "cuda") if offload else OffloadPolicy()
        for module in modules.values():
            for block in blocks(module):
                fully_shard(block, mesh=mesh, mp_policy=policy, offload_policy=where)
            fully_shard(module, mesh=mesh, mp_policy=policy, offload_policy=where)
            if hasattr(module, "velocity"):  # the objectives call it, not forward: it must gather too
                register_fsdp_forward_method(module, "velocity")
        self.all = nn.ModuleDict({**modules, **self.replicated})  # for the optimizer's state by parameter name
        self._depth = 0

    # ------------------------------------------------------------------------------- the loop
    def sync_gradients(self, sync: bool) -> None:
        """Off for every micro-batch but the last: gradients add up locally, then reduce once."""
        for module in self.modules.values():
            module.set_requires_gradient_sync(sync)

    def state(self, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
        """(trained modules' full state, optimizer state in index order), on rank 0; collective."""
        modules = {name: trained_only(module, get_model_state_dict(module, options=FULL_ON_RANK0))
                   for name, module in self.modules.items()}
        modules.update({name: trained_only(module, {k: v.cpu() for k, v in module.state_dict().items()})
                        for name, module in self.replicated.items()})
        by_name = get_optimizer_state_dict(self.all, optimizer, options=FULL_ON_RANK0)
        return modules, by_index(by_name) if by_name else {}

    def load(self, optimizer: torch.optim.Optimizer, modules: dict, optimizer_state: dict) -> None:
        """A full checkpoint's state into the shards (every rank read it; no communication)."""
        for name, module in self.modules.items():
            set_model_state_dict(module, modules[name], options=StateDictOptions(full_state_dict=True, strict=False))
        for name, module in self.replicated.items():
            module.load_state_dict(modules[name], strict=False)
        set_optimizer_state_dict(self.all, optimizer, by_name(optimizer_state, optimizer, self.all), options=FULL)

    def average_replicated(self) -> None:
        """The replicated modules' gradients, averaged over the ranks as the shards' are (one all_reduce)."""
        grads = [p.grad for m in self.replicated.values() for p in m.parameters() if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.distributed.all_reduce(flat)
        flat /= torch.distributed.get_world_size()
        for g, part in zip(grads, flat.split([g.numel() for g in grads])):
            g.copy_(part.view_as(g))

    def clip(self, params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
        """Clip by the global norm of the sharded and the replicated gradients together; the norm."""
        grads = [p.grad for p in params if p.grad is not None]
        if not self.replicated:
            return full(nn.utils.clip_grad_norm_(params, max_norm))
        sharded = [g for g in grads if isinstance(g, DTensor)]
        plain = [g for g in grads if not isinstance(g, DTensor)]
        parts = ([full(nn.utils.get_total_norm(sharded))] if sharded else []) + \
            ([nn.utils.get_total_norm(plain)] if plain else [])
        total = torch.linalg.vector_norm(torch.stack(parts))
        coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        for g in grads:  # a shard scales its local part
            (g.to_local() if isinstance(g, DTensor) else g).mul_(coef)
        return total

    # ------------------------------------------------------------------------------- whole weights
    @contextlib.contextmanager
    def gathered(self):
        """Every rank: whole weights in every module until the end of the block, so one rank alone may run them
        (sample grids, evaluations). Re-entrant: only the outermost call communicates."""
        fsdp = [m for module in self.modules.values() for m in module.modules() if isinstance(m, FSDPModule)]
        self._depth += 1
        if self._depth == 1:
            for m in fsdp:
                m.set_reshard_after_forward(False, recurse=False)
                m.unshard()
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:  # the shards were never touched: freeing the whole copies is all
                for m in fsdp:
                    m.reshard()
                    m.set_reshard_after_forward(True, recurse=False)

    @property
    def gathering(self) -> bool:
        return self._depth > 0

    def plain(self) -> dict[str, nn.Module]:
        """Ordinary modules holding the trained weights, on every rank (collective), for what follows training."""
        out = {}
        for name, module in self.modules.items():
            state = get_model_state_dict(module, options=FULL)
            plain = self.skeletons[name]
            plain.load_state_dict(state, assign=True)
            out[name] = plain.train(module.training)
        return {**out, **self.replicated}


def shard(modules: dict[str, nn.Module], sharding: str, dist, label: str, device: torch.device,
          bf16: bool, replicated: dict[str, nn.Module] | None = None) -> Shards | None:
    """train.sharding: fsdp over several processes (one process: warned, and trained unsharded)."""
    if sharding != "fsdp":
        return None
    if not dist.active:
        print(f"[{label}] warning: train.sharding fsdp on one process shards nothing; training unsharded", flush=True)
        return None
    return Shards(modules, device, dist.world, bf16, replicated=replicated)


def trained_only(module: nn.Module, state: dict) -> dict:
    """What a checkpoint keeps of a module (runtime/train/loop.py trained_state): all, or the trained parameters."""
    frozen = {name for name, p in module.named_parameters() if not p.requires_grad}
    if not frozen:
        return state
    trained = {name for name, p in module.named_parameters() if p.requires_grad}
    return {k: v for k, v in state.items() if k in trained}


def by_index(state: dict) -> dict:
    """An optimizer state keyed by parameter name -> the order torch's own state_dict uses (0, 1, ...)."""
    names = [name for group in state["param_groups"] for name in group["params"]]
    index = {name: i for i, name in enumerate(names)}
    groups = [{**group, "params": [index[n] for n in group["params"]]} for group in state["param_groups"]]
    return {"state": {index[n]: value for n, value in state["state"].items()}, "param_groups": groups}


def by_name(state: dict, optimizer: torch.optim.Optimizer, model: nn.Module) -> dict:
    """The reverse of `by_index`, for this optimizer's parameters (named by their place in `model`)."""
    names = {id(p): n for n, p in model.named_parameters()}
    order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    groups = [{**group, "params": [order[i] for i in group["params"]]} for group in state["param_groups"]]
    return {"state": {order[i]: value for i, value in state["state"].items()}, "param_groups": groups}


def full(tensor: torch.Tensor) -> torch.Tensor:
    """A DTensor's whole value (collective), a plain tensor as it is."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def shard_like(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """This rank's part of a full `value`, laid out as DTensor `like` (no communication: every rank has it)."""
    if not isinstance(like, DTensor):
        return value
    return distribute_tensor(value.to(like.device), like.device_mesh, like.placements, src_data_rank=None)
