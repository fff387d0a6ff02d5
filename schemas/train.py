"""`train:` batching, precision, EMA, checkpoints, samples and logging of a training stage."""
from typing import Literal

from pydantic import Field

from .base import Block, Probability, Seed

DEFAULT_PROMPTS = ("a red circle", "two blue squares", "a green triangle above a yellow circle", "a small purple star")


class EMA(Block):
    decay: float = Field(0.9999, gt=0, lt=1, description="EMA decay, applied as configured from the first update.")
    warmup: bool = Field(False, description="Ramp the decay up as 1 - (1 + step)^(-2/3) (capped at decay) instead.")
    every: int = Field(1, gt=0, description="Update the EMA every this many optimizer steps.")


class Checkpoint(Block):
    every: int = Field(500, gt=0, description="Write a checkpoint every this many optimizer steps (and at the end).")
    every_minutes: float | None = Field(None, gt=0, description="Also write one when this many minutes have passed "
                                        "since the last (with several processes, at the next step that logs).")
    keep: int = Field(2, gt=0, description="How many recent checkpoints to keep.")


class Samples(Block):
    every: int = Field(500, gt=0, description="Write a sample grid every this many steps (and at the end).")
    prompts: list[str] = Field(default_factory=lambda: list(DEFAULT_PROMPTS), description="Fixed prompts of the grid.")
    per_prompt: int = Field(2, gt=0, description="Images per prompt (fixed seeds).")
    num_steps: int = Field(28, gt=0, description="Sampler steps.")
    solver: Literal["euler", "heun", "consistency"] = Field(
        "euler", description="ODE solver on the shifted grid; consistency: multi-step sampling of a consistency-distilled student.")
    cfg_scale: float = Field(4.0, ge=0, description="Classifier-free guidance scale (1 = none).")
    seed: Seed = Field(0, description="Seed of the grid's initial noise.")


class Train(Block):
    global_batch: int = Field(32, gt=0, description="Samples per optimizer step across all devices and accumulation.")
    micro_batch: int | None = Field(None, gt=0, description="Samples per device per forward; omitted: global_batch / devices.")
    accumulation: int | None = Field(None, gt=0, description="Gradient accumulation steps; omitted: derived, "
                                     "global_batch / (micro_batch x devices), which must be whole.")
    max_grad_norm: float | None = Field(1.0, gt=0, description="Clip the gradient norm to this; null: no clipping.")
    ema: EMA | None = Field(None, description="Exponential moving average of the weights; null: none.")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 autocast on GPU, fp32 on CPU.")
    compile: bool | Literal["regional", "full"] = Field(
        False, description="torch.compile the denoiser for training. regional (or true): each repeated block "
        "(transformer, UNet down / mid / up block) compiled once and shared by the blocks of its class, so compiling "
        "takes about one block's time; full: the whole denoiser as one graph; false: eager. Compiled code is cached "
        "under data.cache.dir/torch_compile (or TORCHINDUCTOR_CACHE_DIR) and reused by later runs.")
    sharding: Literal["none", "fsdp"] = Field(
        "none", description="none: every process holds the whole model (data parallelism); fsdp: torch's FSDP2 shards "
        "the trained modules' weights, gradients and optimizer state over the processes, block by block (bf16 "
        "compute, fp32 reduction and weights under bf16 precision). Checkpoints are gathered: a stage resumes on any "
        "number of processes, sharded or not (the key is outside the stage's hash, like the process count). On one "
        "process nothing is sharded (warned). A frozen copy of the model beside the trained one (diffusion_dpo's "
        "and flow_grpo's reference, a distillation stage's teacher) is sharded too, never given optimizer state. Runs every built-in "
        "stage kind (LoRA and gold included; ADD's discriminator stays whole on every rank), not yet a custom "
        "objective or train.compile.")
    offload_frozen: bool = Field(
        False, description="Keep the stage's frozen modules in CPU memory, each brought to the device only while it "
        "runs: a pretrained text encoder (CLIP, T5, MiniLM) and the VAE when they encode or decode, a reference or "
        "teacher for its forward (under sharding: fsdp its shards, block by block). Slower (weights cross the bus "
        "at each use), less device memory: `plan` counts the largest of them once. Needs a frozen module (a pixel-"
        "space model with a builtin text encoder under LoRA has none). Outside the stage's hash.")
    cfg_dropout: Probability = Field(0.1, description="Probability of dropping the condition (for classifier-free guidance).")
    checkpoint: Checkpoint = Field(default_factory=dict, validate_default=True, description="Checkpoint cadence.")
    samples: Samples = Field(default_factory=dict, validate_default=True, description="Sample grids during and after training.")
    log_every: int = Field(10, gt=0, description="Log metrics every this many steps.")

    def split(self, processes: int) -> tuple[int, int]:
        """(micro_batch, accumulation) with micro_batch x processes x accumulation = global_batch.

        What the spec fixes is kept (an explicit micro_batch, else an explicit accumulation) for the number of
        processes a run actually has, which `--nproc` may change; BatchSplitError names the key that cannot be."""
        if self.micro_batch is not None:
            micro = self.micro_batch
        elif self.accumulation is not None:
            micro = self.global_batch // (processes * self.accumulation)
        else:
            micro = self.global_batch // processes
        accumulation = self.accumulation or (self.global_batch // (micro * processes) if micro else 0)
        if micro >= 1 and accumulation >= 1 and micro * processes * accumulation == self.global_batch:
            return micro, accumulation
        g, p, a, m = self.global_batch, processes, self.accumulation, self.micro_batch
        if m is not None and a is not None:
            raise BatchSplitError("accumulation", f"micro_batch {m} x {p} process(es) x accumulation {a} = {m * p * a}, "
                                  f"not global_batch {g}")
        if a is not None:
            raise BatchSplitError("accumulation", f"global_batch {g} does not split into {p} process(es) x accumulation "
                                  f"{a} (micro-batches of {g / (p * a):g} samples)")
        if m is not None:
            raise BatchSplitError("micro_batch", f"global_batch {g} is not a whole number of micro_batch {m} x {p} "
                                  "process(es)")
        raise BatchSplitError("global_batch", f"global_batch {g} does not split over {p} process(es)")


class BatchSplitError(ValueError):
    """The batch sizes of `train` do not fit the number of processes; `key` is the key to change."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key

