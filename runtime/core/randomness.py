"""Random draws of one micro-batch as a slice of the draws of its whole global batch.

Every random quantity of a training step (noise, timesteps, condition dropout, posterior samples)
is drawn for the whole global batch from a generator seeded by (seed, step, name), and each
micro-batch takes its own rows. So the draws of an item depend on its position in the global
batch only, not on how the batch is cut into ranks and accumulation micro-batches: 2 processes
train on exactly the numbers 1 process does, and a resumed run needs no generator state.
"""
from __future__ import annotations

import hashlib
from typing import Callable, TypeVar

import torch

T = TypeVar("T")


def stream_seed(seed: int, step: int, name: str) -> int:
    digest = hashlib.blake2b(f"{seed}:{step}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class SliceRandom:
    """Draws for rows [offset, offset + size) of a global batch of `total` items at optimizer step `step`."""

    def __init__(self, seed: int, step: int, offset: int, size: int, total: int):
        if not 0 <= offset <= offset + size <= total:
            raise ValueError(f"rows [{offset}, {offset + size}) do not lie in a global batch of {total}")
        self.seed, self.step, self.offset, self.size, self.total = seed, step, offset, size, total

    def generator(self, name: str) -> torch.Generator:
        return torch.Generator().manual_seed(stream_seed(self.seed, self.step, name))

    def rows(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor[self.offset:self.offset + self.size]

    def randn(self, name: str, shape) -> torch.Tensor:
        """Standard normal of `shape` = (size, ...): this slice's rows of a (total, ...) draw."""
        if shape[0] != self.size:
            raise ValueError(f"shape {tuple(shape)} does not have the slice's {self.size} rows")
        return self.rows(torch.randn((self.total, *shape[1:]), generator=self.generator(name)))

    def draw(self, name: str, sample: Callable[[int, torch.Generator], T]) -> T:
        """`sample(total, generator)` for the whole global batch; the caller takes its rows with `rows`."""
        return sample(self.total, self.generator(name))
