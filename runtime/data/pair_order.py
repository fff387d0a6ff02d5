"""Which fixed pairs (Diffusion-DPO's preference pairs, reflow's coupling) the rows of a global batch read.

Row i of step s's global batch of B is pair perm_e[(s B + i) mod N] with e = (s B + i) // N: every pair once
per epoch, in an order drawn per epoch from (seed, epoch, stream). A micro-batch's rows sit where the data
stream puts them, so any number of processes x accumulation steps reads what one process does.
"""
from __future__ import annotations

import torch

from ..core.randomness import stream_seed


class PairOrder:
    def __init__(self, count: int, seed: int, stream: str, batch: int, micro: int, dist):
        self.count, self.seed, self.stream = count, seed, stream
        self.batch, self.micro, self.dist = batch, micro, dist
        self.orders: dict[int, torch.Tensor] = {}

    def rows(self, step: int, micro: int) -> tuple[int, list[int]]:
        """This micro-batch's offset in the global batch and the pairs its rows take."""
        offset = (micro * self.dist.world + self.dist.rank) * self.micro  # the data stream's slice order
        places = [step * self.batch + offset + i for i in range(self.micro)]
        return offset, [int(self.order(p // self.count)[p % self.count]) for p in places]

    def order(self, epoch: int) -> torch.Tensor:
        if epoch not in self.orders:  # one epoch kept: steps only move forward
            generator = torch.Generator().manual_seed(stream_seed(self.seed, epoch, self.stream))
            self.orders = {epoch: torch.randperm(self.count, generator=generator)}
        return self.orders[epoch]
