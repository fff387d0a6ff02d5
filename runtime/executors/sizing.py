"""A local run of stages sized for more than this machine: said before anything is built, and
confirmed when it would run for long.

The time here is the plan's training FLOPs over this machine's throughput: a matrix-multiply probe of
one device (a fraction of a second) times the share of it a training step reaches (PROBE_SHARE).
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch

from ...compiler import Issue, Location, SpecError
from ...compiler.lower import cache_status
from ...compiler.plan import Plan
from ...schemas.hardware import ACCELERATORS

CONFIRM_ABOVE_S = 3600.0
# Training throughput over the probe's: 0.55 measured for the quick start's pre-training on 2 CPU cores
# (109 of 198 GFLOP/s); with 0.5 the announced time was 1.10x the training time there and 1.15x toy2d's
# (benchmarks/local_estimate.py).
PROBE_SHARE = 0.5


@dataclass(frozen=True)
class Here:
    """This machine as a local run uses it: `devices` processes of one accelerator kind."""

    kind: str  # a key of ACCELERATORS when this device is one of them, else its own name
    name: str
    devices: int
    tflops: float  # measured, one device, in the precision training uses there

    @property
    def parallel(self) -> int:
        """Devices that add throughput: GPUs do, CPU processes share the same cores."""
        return self.devices if self.kind != "cpu" else 1

    def __str__(self) -> str:
        count = f"{self.devices} process{'es' if self.devices != 1 else ''} on "
        return f"{count}{self.name}, measured {self.tflops:.3g} TFLOP/s per device"


def probe_tflops(device: torch.device, size: int, dtype: torch.dtype, repeats: int = 3) -> float:
    """Matrix-multiply throughput of one device: the fastest of a few timings after a warm-up (what the
    device can do, not what a busy moment of the machine leaves of it)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    a @ b
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e12


def measure_here(devices: int) -> Here:
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        kind = next((key for key in sorted(ACCELERATORS, key=len) if key != "cpu" and key in name.lower()), name)
        return Here(kind, name, min(devices, torch.cuda.device_count()),
                    probe_tflops(torch.device("cuda"), 8192, torch.bfloat16, repeats=10))
    name = f"a CPU with {os.cpu_count()} cores"
    return Here("cpu", name, devices, probe_tflops(torch.device("cpu"), 1024, torch.float32, repeats=5))


def describe(block) -> str:
    """accelerator x devices x nodes, as the executor block declares them."""
    if block.kind == "slurm":
        per_node = f"{block.gpus_per_node} x {block.gpu}" if block.gpus_per_node else "1 CPU task"
        return f"{block.nodes} node{'s' if block.nodes != 1 else ''} x {per_node} (slurm)"
    return f"{block.devices} x {block.gpu} (local)"


def sized_for_more(block, here: Here) -> bool:
    return block.num_devices() > here.devices or block.gpu not in ("cpu", here.kind)


def duration(seconds: float) -> str:
    for unit, size in (("years", 365 * 86400), ("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.0f} s"


def check_size(plan: Plan, devices: int, yes: bool, interactive: bool | None = None,
               ask: Callable[[str], str] = input) -> None:
    """Print, for each stage to run that the spec sized for more than this machine (or that would run for
    over CONFIRM_ABOVE_S here), what it declares against what is here and its time here. Stages over the
    limit start only with `yes`, or after a yes on a terminal; otherwise SpecError at the stage's executor.
    The plan's stages carry their estimates when run_plan made it (runtime/estimate.py with_estimates)."""
    from ..estimate import with_estimates

    plan = with_estimates(plan)
    todo = [s for s in plan.stages if cache_status(s.run_dir) != "hit"]
    if not todo:
        return
    here, long = measure_here(devices), []
    for stage_plan in todo:
        declared, estimate = plan.declared_executor(stage_plan.name), stage_plan.estimate
        seconds = estimate.train_flops / (here.tflops * 1e12 * PROBE_SHARE * here.parallel)
        if not (sized_for_more(declared, here) or seconds > CONFIRM_ABOVE_S):
            continue
        print(f"[{stage_plan.name}] the spec sizes this stage for {describe(declared)}; here: {here}\n"
              f"[{stage_plan.name}] {estimate.train_flops:.3g} training FLOPs ({stage_plan.steps:,} steps): about "
              f"{duration(seconds)} here (the plan: {estimate.gpu_hours:,.3g} {'GPU-' if declared.gpu != 'cpu' else ''}hours "
              f"on {declared.num_devices()} x {declared.gpu})", flush=True)
        if seconds > CONFIRM_ABOVE_S:
            long.append((stage_plan, seconds))
    if not long or yes:
        return
    names = ", ".join(f"{s.name} (about {duration(t)})" for s, t in long)
    interactive = sys.stdin.isatty() if interactive is None else interactive
    if interactive and ask(f"Start {names} on this machine? [y/N] ").strip().lower() in ("y", "yes"):
        return
    first = long[0][0]
    why = ("not started" if interactive else
           f"refused without --yes (not on a terminal, so nobody was asked): {names} would run here for over "
           f"{duration(CONFIRM_ABOVE_S)}")
    smoke = ", try the spec's version sized for one machine (--profile smoke)" if "smoke" in plan.spec.profiles else ""
    raise SpecError([Issue(Location.parse(first.executor_loc), "executor", f"{why}; run it on a cluster "
                           f"(--executor slurm){smoke} or pass --yes to start it here anyway")])
