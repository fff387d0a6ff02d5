"""Webdataset shards through one curriculum phase: streamed, bucketed on the fly, exactly resumable.

There is one reader per rank; each streams its own shards of the epoch (no shard is read twice,
none skipped; webdataset_stream.py) and groups samples by aspect bucket, emitting a micro-batch
whenever a bucket has enough. Data-loader workers decode in parallel without changing the data. A reader's k-th micro-batch is a pure function of the
seed, the phase and k: after a restart the reader fast-forwards from the start of the phase,
reading headers only (no pixel is decoded for skipped batches). At the end of a reader's epoch the
incomplete buckets are filled with repeats of their own samples, or dropped, as `data.buckets`
says, and counted.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from .buckets import Bucket, assign, cover_crop
from .phases import Item, caption_complexity
from .webdataset_stream import Sample, WebDatasetStream, decode, image_size


@dataclass
class ReaderCounts:
    emitted: int = 0
    repeated: int = 0
    dropped: int = 0
    outside_complexity: int = 0


@dataclass
class _Reader:
    epoch: int = 0
    emitted: int = 0  # micro-batches produced since the start of the phase
    samples: object = None  # the stream iterator of the current epoch
    pending: dict = field(default_factory=dict)  # bucket index -> [Sample]
    ready: list = field(default_factory=list)  # [(epoch, bucket index, [Sample])] waiting to be handed out
    counts: ReaderCounts = field(default_factory=ReaderCounts)


class WebDatasetPhase:
    def __init__(self, block, seed: int, phase, buckets: tuple[Bucket, ...], micro_batch: int, policy):
        self.stream = WebDatasetStream(block, seed)
        self.seed, self.buckets, self.size, self.policy = seed, buckets, micro_batch, policy
        self.band = tuple(phase.complexity)
        self.readers: dict[tuple[int, int], _Reader] = {}

    def micro_batch(self, reader: int, num_readers: int, k: int, crop: str) -> tuple[Bucket, list[Item]]:
        """The k-th micro-batch of reader `reader` of `num_readers` in this phase."""
        state = self.readers.get((reader, num_readers))
        if state is None or state.emitted > k:
            state = self.readers[(reader, num_readers)] = _Reader()
        while state.emitted < k:  # fast-forward: headers only
            self._next(state, reader, num_readers)
        epoch, bucket_index, samples = self._next(state, reader, num_readers)
        bucket = self.buckets[bucket_index]
        return bucket, [self._item(sample, bucket, epoch, crop) for sample in samples]

    def _next(self, state: _Reader, reader: int, num_readers: int) -> tuple[int, int, list[Sample]]:
        """(epoch, bucket index, samples) of the reader's next micro-batch."""
        while not state.ready:
            if state.samples is None:
                state.samples = self.stream.iterate(state.epoch, reader, num_readers)
            try:
                _, sample = next(state.samples)
            except StopIteration:
                self._end_epoch(state)
                continue
            if not self.band[0] <= caption_complexity(sample.caption, sample.meta) <= self.band[1]:
                state.counts.outside_complexity += 1
                continue
            index = assign(*image_size(sample), self.buckets)
            group = state.pending.setdefault(index, [])
            group.append(sample)
            if len(group) == self.size:
                state.ready.append((state.epoch, index, state.pending.pop(index)))
        state.emitted += 1
        state.counts.emitted += 1
        return state.ready.pop(0)

    def _end_epoch(self, state: _Reader) -> None:
        for index, group in sorted(state.pending.items()):
            if self.policy.remainder == "repeat":
                rng = np.random.default_rng([self.seed, state.epoch, index])
                extra = [group[i] for i in rng.integers(0, len(group), size=self.size - len(group))]
                state.counts.repeated += len(extra)
                state.ready.append((state.epoch, index, group + extra))
            else:
                state.counts.dropped += len(group)
        state.pending, state.samples = {}, None
        state.epoch += 1

    def _item(self, sample: Sample, bucket: Bucket, epoch: int, crop: str) -> Item:
        digest = hashlib.sha256(sample.image_bytes).hexdigest()
        rng = np.random.default_rng([self.seed, epoch, int(digest[:12], 16)]) if crop == "random" else None
        image = cover_crop(decode(sample), bucket, crop, rng)
        where = f"random:{epoch}" if crop == "random" else "center"
        return Item(image, sample.caption, 0, f"wds:{digest}:{bucket.shape}:{where}")

    def summary(self) -> dict:
        counts = self.stream.counts
        totals = ReaderCounts()
        for state in self.readers.values():
            for name in vars(totals):
                setattr(totals, name, getattr(totals, name) + getattr(state.counts, name))
        return {"source": "webdataset", "shards": len(self.stream.shards), "read": counts.num_read,
                "kept": counts.num_kept, "filtered": counts.num_filtered, "missing_image": counts.num_missing_image,
                "missing_caption": counts.num_missing_caption, **vars(totals)}
