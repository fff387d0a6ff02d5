"""Worker processes that prepare micro-batches ahead of the training step (torch DataLoader).

Micro-batches are still addressed by (step, micro): the loader walks them in order from wherever
training (re)starts, so workers change the speed, never the data.
"""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from .sources import DataError
from .stream import Batch, BatchStream


class _MicroBatches(Dataset):
    def __init__(self, stream: BatchStream, accumulation: int, total: int):
        self.stream, self.accumulation, self.total = stream, accumulation, total

    def __len__(self) -> int:
        return self.total

    def __getitem__(self, index: int) -> dict:
        step, micro = divmod(index, self.accumulation)
        try:
            return vars(self.stream.batch(step, micro))
        except DataError as exc:
            # Handed back as a value: raised by the DataLoader it would come back wrapped in a
            # multi-line worker traceback, and a BadSample would not survive the rewrapping.
            return {"data_error": exc}


class PrefetchingStream:
    """`batch(step, micro)` like BatchStream, served by `num_workers` processes `prefetch_factor` ahead."""

    def __init__(self, stream: BatchStream, accumulation: int, steps: int, num_workers: int, prefetch_factor: int):
        self.stream, self.accumulation = stream, accumulation
        self.dataset = _MicroBatches(stream, accumulation, steps * accumulation)
        self.num_workers, self.prefetch_factor = num_workers, prefetch_factor
        self._iterator, self._next = None, -1

    def __getattr__(self, name):  # phase_at, report, toy, ... come from the stream
        return getattr(self.stream, name)

    def _start(self, index: int) -> None:
        loader = DataLoader(self.dataset, batch_size=None, sampler=range(index, len(self.dataset)),
                            num_workers=self.num_workers, prefetch_factor=self.prefetch_factor,
                            generator=torch.Generator().manual_seed(0))
        self._iterator, self._next = iter(loader), index

    def batch(self, step: int, micro: int) -> Batch:
        index = step * self.accumulation + micro
        if self._iterator is None or index != self._next:
            self._start(index)
        fields = next(self._iterator)
        self._next += 1
        if "data_error" in fields:
            self._iterator = None  # the workers stop at an error; a later call starts afresh
            raise fields["data_error"]
        batch = Batch(**fields)
        self.stream.note_skipped(batch)
        return batch
