"""Micro-batches addressed by (step, micro-batch): a pure function of the seed, so resume is exact.

The curriculum phase is a function of the step; the aspect bucket of a micro-batch is drawn from
the phase's ratios by a hash of (seed, micro-batch index); every rank reads its own slice of the
global sample order, which is a fresh permutation of the dataset each epoch.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from ...schemas.buckets import bucket_sides
from .shapes import ShapesDataset, class_label
from .toy2d import Toy2DBatches


@dataclass
class Batch:
    x: torch.Tensor  # (B, 3, H, W) in [-1, 1], or (B, 2) points
    captions: list[str]
    class_labels: torch.Tensor | None
    height: int  # pixels (0 for points)
    width: int
    phase: int


def _hash_int(*parts) -> int:
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class BatchStream:
    def __init__(self, data, seed: int, micro_batch: int, accumulation: int, multiple: int,
                 rank: int = 0, world: int = 1):
        self.data, self.seed, self.size = data, seed, micro_batch
        self.accumulation, self.multiple, self.rank, self.world = accumulation, multiple, rank, world
        source = data.source
        if source.kind == "toy2d":
            self.toy = Toy2DBatches(source, seed)
        elif source.kind == "shapes":
            self.shapes = ShapesDataset(source, seed)
            self._order: dict[int, torch.Tensor] = {}
            self._cache: dict[tuple, tuple[np.ndarray, str, int]] = {}
        else:
            raise NotImplementedError(f"data source '{source.kind}' arrives with the data pipeline; "
                                      "this version trains on shapes and toy2d")

    def phase_at(self, step: int) -> int:
        """Index of the curriculum phase that holds (0-based) optimizer step `step`."""
        starts = [p.at_step for p in self.data.curriculum]
        return max(i for i, start in enumerate(starts) if start <= step)

    def batch(self, step: int, micro: int) -> Batch:
        index = step * self.accumulation + micro
        phase_index = self.phase_at(step)
        if self.data.source.kind == "toy2d":
            points = self.toy.batch(index * self.world + self.rank, self.size)
            return Batch(points, [""] * self.size, None, 0, 0, phase_index)
        phase = self.data.curriculum[phase_index]
        ratio = phase.aspect_ratios[_hash_int(self.seed, "bucket", index) % len(phase.aspect_ratios)]
        height, width = bucket_sides(phase.resolution, ratio, self.multiple)
        first = (index * self.world + self.rank) * self.size
        items = [self._item(position, height, width, tuple(phase.complexity))
                 for position in range(first, first + self.size)]
        images = torch.from_numpy(np.stack([image for image, _, _ in items])).permute(0, 3, 1, 2)
        x = images.float().div(127.5).sub(1.0)
        labels = torch.tensor([label for _, _, label in items])
        return Batch(x, [caption for _, caption, _ in items], labels, height, width, phase_index)

    def _item(self, position: int, height: int, width: int, band: tuple[int, int]):
        count = len(self.shapes)
        epoch, offset = divmod(position, count)
        if epoch not in self._order:
            self._order = {epoch: torch.randperm(count, generator=torch.Generator().manual_seed(
                _hash_int(self.seed, "epoch", epoch)))}
        index = int(self._order[epoch][offset])
        key = (index, height, width, band)
        if key not in self._cache:
            item = self.shapes.item(index, height, width, band)
            if len(self._cache) * height * width * 3 > 200_000_000:  # keep ~200 MB of rendered images
                self._cache.clear()
            self._cache[key] = (item.image, item.caption, class_label(item.scene))
        return self._cache[key]
