"""The denoiser prepared for a fast training step: torch.compile by region with a compile cache that later runs
reuse, and channels-last memory for a convolutional UNet on a GPU.

Regional compilation compiles each repeated block (a transformer's joint or single blocks, a UNet's down, mid
and up blocks) instead of the whole model: with torch's default of treating a module's parameters as inputs,
blocks of one class share one compiled graph, so compiling costs about one block's time, and a graph break in
the code around the blocks (the adapters, a text encoder) leaves the blocks compiled.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

COMPILE_CACHE = "torch_compile"  # under data.cache.dir, beside the latent and text caches


def regions(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """The blocks to compile one by one: every member of a child ModuleList whose name ends in `blocks`
    (transformer_blocks, single_transformer_blocks, down_blocks, up_blocks) and a `mid_block`; empty for a
    backbone without repeated blocks (the toy MLP), which is compiled whole."""
    found = []
    for name, child in net.named_children():
        if isinstance(child, nn.ModuleList) and name.endswith("blocks"):
            found += [(f"{name}.{i}", block) for i, block in enumerate(child)]
        elif name == "mid_block" and child is not None:
            found.append((name, child))
    return found


def compile_denoiser(net: nn.Module, mode: str, cache_dir: Path | None) -> list[str]:
    """Compile `net` in place: `regional` (each of `regions`, or the whole net when it has none) or `full` (one
    graph of the whole net). The compiled code goes to `cache_dir` (reused by the next run of any stage with
    the same shapes), unless TORCHINDUCTOR_CACHE_DIR was set. Returns what was compiled."""
    if cache_dir is not None and not _user_cache():
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(cache_dir).resolve())
    blocks = regions(net) if mode == "regional" else []
    if not blocks:
        net.compile()
        return ["<whole model>"]
    for _, block in blocks:
        block.compile()
    return [name for name, _ in blocks]


def _user_cache() -> bool:
    """Whether TORCHINDUCTOR_CACHE_DIR names a folder the user chose (inductor writes its default, a folder in
    /tmp that SLURM nodes do not share, into the variable itself once it has looked it up)."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    chosen = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    return chosen is not None and os.path.abspath(chosen) != os.path.abspath(default_cache_dir())


def prepare_denoiser(ctx) -> None:
    """What the stage's `train` block and the device ask of the denoiser, before the optimizer and EMA take
    hold of its parameters (channels-last replaces their storage)."""
    net, train = ctx.bundle.denoiser.net, ctx.stage.train
    if ctx.device.type == "cuda" and ctx.bundle.denoiser.spec.kind == "unet":
        # cuDNN's convolutions run NHWC natively; an NCHW input is converted by the first convolution.
        net.to(memory_format=torch.channels_last)
    if train.compile:
        mode = "regional" if train.compile is True else train.compile
        compiled = compile_denoiser(net, mode, Path(ctx.stage.data.cache.dir) / COMPILE_CACHE)
        if ctx.dist.main:
            what = f"{len(compiled)} blocks" if len(compiled) > 1 else compiled[0]
            print(f"[{ctx.label}] torch.compile ({mode}): {what}; compiled code cached under "
                  f"{os.environ.get('TORCHINDUCTOR_CACHE_DIR')}", flush=True)
