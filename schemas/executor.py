"""`executor:` where stages run: in this process, or as SLURM jobs through submitit."""
from typing import Literal

from pydantic import Field

from .base import Block, tagged
from .hardware import ACCELERATORS

Accelerator = Literal[tuple(ACCELERATORS)]


class Local(Block):
    kind: Literal["local"] = Field("local", description="Run stage after stage on this machine.")
    devices: int = Field(1, gt=0, description="Processes (one per GPU, or gloo processes on CPU).")
    gpu: Accelerator = Field("cpu", description="What each device is, for the plan's estimates.")
    mfu: float = Field(0.35, gt=0, le=1, description="Assumed model FLOPs utilisation, for the GPU-hour estimate.")

    def num_devices(self) -> int:
        return self.devices


class Slurm(Block):
    kind: Literal["slurm"] = Field("slurm", description="One SLURM job per stage (submitit), chained with afterok dependencies.")
    partition: str | None = Field(None, description="sbatch --partition.")
    account: str | None = Field(None, description="sbatch --account.")
    qos: str | None = Field(None, description="sbatch --qos.")
    nodes: int = Field(1, gt=0, description="Nodes per job.")
    gpus_per_node: int = Field(1, ge=0, description="GPUs per node (one task per GPU; 0: one CPU task per node).")
    cpus_per_task: int = Field(8, gt=0, description="CPU cores per task (data workers).")
    mem_gb: float | None = Field(None, gt=0, description="Memory per node in GB; omitted: the cluster default.")
    timeout_min: int = Field(24 * 60, gt=0, description="Job time limit in minutes; a job near it checkpoints and requeues.")
    constraint: str | None = Field(None, description="sbatch --constraint (node features).")
    signal_delay_s: int = Field(120, gt=0, description="Seconds before the limit at which SLURM signals the job to checkpoint.")
    max_requeues: int = Field(3, ge=0, description="How many times a preempted or timed-out job is requeued.")
    setup: list[str] = Field(default_factory=list, description="Shell lines run before the job (module load, env activation).")
    sbatch: dict[str, str | int] = Field(default_factory=dict, description="Any other sbatch parameter, passed through.")
    gpu: Accelerator = Field("h100", description="What each GPU is, for the plan's estimates.")
    mfu: float = Field(0.35, gt=0, le=1, description="Assumed model FLOPs utilisation, for the GPU-hour estimate.")

    def tasks_per_node(self) -> int:
        """One task (rank) per GPU; one CPU task on a node without GPUs."""
        return self.gpus_per_node or 1

    def num_devices(self) -> int:
        return self.nodes * self.tasks_per_node()


Executor = tagged(Local, Slurm, default="local")


class JsonlTracking(Block):
    kind: Literal["jsonl"] = Field("jsonl", description="Metrics to metrics.jsonl in the stage folder only.")


class WandbTracking(Block):
    kind: Literal["wandb"] = Field("wandb", description="metrics.jsonl plus Weights & Biases.")
    project: str = Field(description="wandb project.")
    entity: str | None = Field(None, description="wandb entity (team or user).")
    mode: Literal["offline", "online", "disabled"] = Field("offline", description="offline writes files to sync later.")
    tags: list[str] = Field(default_factory=list, description="Run tags.")


Tracking = tagged(JsonlTracking, WandbTracking, default="jsonl")
