"""Reflow's fixed coupling: (noise, teacher sample) pairs, generated once by the teacher ODE and cached by
content (the teacher's hash, the prompts, the seed, the sampler), in chunks that the ranks of a run share out
(chunk i by rank i mod world) and that survive an interrupted run: a rerun makes only the missing ones.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

COUPLING_CACHE = "reflow_pairs"
CHUNK = 64


@dataclass
class Coupling:
    noise: Tensor  # (N, ...) the starting noise, in the student's (latent) space
    samples: Tensor  # (N, ...) where the teacher's ODE took it
    captions: list[str]

    def __len__(self) -> int:
        return len(self.captions)


def coupling_key(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


def make_coupling(folder: Path, prompts: list[str], solve: Callable[[list[str], int], tuple[Tensor, Tensor]],
                  rank: int = 0, world: int = 1, barrier=lambda: None, log=print) -> Coupling:
    """`solve(prompts, chunk_index)` -> (noise, samples) of one chunk; each rank makes its share of the chunks
    not on disk yet, then every rank reads them all."""
    chunks = [prompts[i:i + CHUNK] for i in range(0, len(prompts), CHUNK)]
    folder.mkdir(parents=True, exist_ok=True)
    mine = [i for i in range(len(chunks)) if i % world == rank]
    todo = [i for i in mine if not (folder / f"chunk-{i:05d}.pt").exists()]
    for done, index in enumerate(todo):
        noise, samples = solve(chunks[index], index)
        path = folder / f"chunk-{index:05d}.pt"
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp")
        torch.save({"noise": noise.cpu(), "samples": samples.cpu()}, tmp)
        os.replace(tmp, path)  # a chunk is on disk whole or not at all
        log(f"pairs: chunk {done + 1}/{len(todo)} of rank {rank} generated")
    if rank == 0:
        log(f"{len(prompts)} pair(s) in {len(chunks)} chunk(s): {len(todo)} generated here, "
            f"{len(mine) - len(todo)} cached ({folder})")
    barrier()
    parts = [torch.load(folder / f"chunk-{i:05d}.pt") for i in range(len(chunks))]
    return Coupling(torch.cat([p["noise"] for p in parts]), torch.cat([p["samples"] for p in parts]), list(prompts))
