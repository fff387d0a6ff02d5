"""Accelerators a spec can declare, for the plan's memory and GPU-hour estimates (plain data).

Peak numbers are dense bf16 tensor-core throughput from the vendors' data sheets; `cpu` is a rough
figure for a few-core development machine, where estimates only need to be the right order.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Accelerator:
    peak_tflops: float
    memory_gib: float


ACCELERATORS: dict[str, Accelerator] = {
    "cpu": Accelerator(peak_tflops=0.2, memory_gib=24.0),
    "v100": Accelerator(peak_tflops=125.0, memory_gib=32.0),
    "a10g": Accelerator(peak_tflops=70.0, memory_gib=24.0),
    "l40s": Accelerator(peak_tflops=362.0, memory_gib=48.0),
    "rtx4090": Accelerator(peak_tflops=165.0, memory_gib=24.0),
    "a100_40gb": Accelerator(peak_tflops=312.0, memory_gib=40.0),
    "a100": Accelerator(peak_tflops=312.0, memory_gib=80.0),
    "h100": Accelerator(peak_tflops=989.0, memory_gib=80.0),
    "h200": Accelerator(peak_tflops=989.0, memory_gib=141.0),
    "b200": Accelerator(peak_tflops=2250.0, memory_gib=180.0),
}
