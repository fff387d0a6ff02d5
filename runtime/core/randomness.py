"""Random draws of one micro-batch as a slice of the draws of its whole global batch.

Every random quantity of a training step depends on (seed, step, name) and the item's position in
the global batch only, not on how the batch is cut into ranks and accumulation micro-batches: 2
processes train on exactly the numbers 1 process does, and a resumed run needs no generator state.
A draw is made for the whole global batch and sliced when that is small (timesteps, dropout, 2-D
points, small images: at most GLOBAL_DRAW_LIMIT numbers); larger tensors come from one generator per
item, so a rank draws its own rows only (the noise of a global batch of 2048 SDXL latents is half a
gigabyte per step). The choice depends on the global batch and the item's shape, never on the cut.
"""
from __future__ import annotations

import hashlib
import math
from typing import Callable, TypeVar

import torch

T = TypeVar("T")
GLOBAL_DRAW_LIMIT = 2**20  # numbers per draw: above it, one generator per item


def stream_seed(seed: int, step: int, name: str) -> int:
    digest = hashlib.blake2b(f"{seed}:{step}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class SliceRandom:
    """Draws for rows [offset, offset + size) of a global batch of `total` items at optimizer step `step`."""

    def __init__(self, seed: int, step: int, offset: int, size: int, total: int, limit: int = GLOBAL_DRAW_LIMIT):
        if not 0 <= offset <= offset + size <= total:
            raise ValueError(f"rows [{offset}, {offset + size}) do not lie in a global batch of {total}")
        self.seed, self.step, self.offset, self.size, self.total = seed, step, offset, size, total
        self.limit = limit

    def generator(self, name: str) -> torch.Generator:
        return torch.Generator().manual_seed(stream_seed(self.seed, self.step, name))

    def rows(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.offset == 0 and self.size == len(tensor):  # one process, no accumulation: all of it
            return tensor
        return tensor[self.offset:self.offset + self.size]

    def randn(self, name: str, shape) -> torch.Tensor:
        """Standard normal of `shape` = (size, ...): this slice's rows of the global batch's draw."""
        if shape[0] != self.size:
            raise ValueError(f"shape {tuple(shape)} does not have the slice's {self.size} rows")
        item = tuple(shape[1:])
        if self.total * math.prod(item) <= self.limit:
            return self.rows(torch.randn((self.total, *item), generator=self.generator(name)))
        return torch.stack([torch.randn(item, generator=self.generator(f"{name}#{self.offset + i}"))
                            for i in range(self.size)])

    def draw(self, name: str, sample: Callable[[int, torch.Generator], T]) -> T:
        """`sample(total, generator)` for the whole global batch; the caller takes its rows with `rows`."""
        return sample(self.total, self.generator(name))
