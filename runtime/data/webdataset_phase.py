"""Webdataset shards through one curriculum phase: streamed, bucketed on the fly, exactly resumable.

There is one reader per rank; each streams its own shards of the epoch (no shard is read twice,
none skipped; webdataset_stream.py) and groups samples by aspect bucket, emitting a micro-batch
whenever a bucket has enough. Data-loader workers decode in parallel without changing the data. A reader's k-th micro-batch is a pure function of the
seed, the phase and k: after a restart the reader fast-forwards from the start of the phase,
reading headers only (no pixel is decoded for skipped batches). At the end of a reader's epoch the
incomplete buckets are filled with repeats of their own samples, or dropped, as `data.buckets`
says, and counted.

Bad images (data.on_bad_sample: skip): a sample whose image header cannot be read is left out
when it is bucketed, which the fast-forward repeats, so resume stays exact. One whose pixels do not
decode (found only when decoding, which the fast-forward never does) is replaced by a stand-in
chosen by the stream's order alone: the rest of its micro-batch, then the last samples the reader
put in its bucket, then in the others. Both are named in `skipped` (in this process) and in the
batch that found them.
"""
from __future__ import annotations

import dataclasses
import hashlib
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from . import filters as filt
from .buckets import Bucket, assign, cover_crop
from .phases import Item, caption_complexity
from .sources import BadSample, DataError
from .webdataset_stream import Sample, WebDatasetStream, decode, image_size

RECENT = 4  # samples a reader remembers per bucket as stand-ins for ones that fail to decode


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
    recent: dict = field(default_factory=dict)  # bucket index -> deque of its last RECENT samples
    counts: ReaderCounts = field(default_factory=ReaderCounts)


class WebDatasetPhase:
    def __init__(self, block, seed: int, phase, buckets: tuple[Bucket, ...], micro_batch: int, policy,
                 on_bad_sample: str = "fail"):
        self.stream = WebDatasetStream(block, seed)
        self.seed, self.buckets, self.size, self.policy = seed, buckets, micro_batch, policy
        self.on_bad_sample = on_bad_sample
        self.band = tuple(phase.complexity)
        self.readers: dict[tuple[int, int], _Reader] = {}
        self.skipped: dict[str, str] = {}  # "shard:key" -> reason
        self._unsent: list[tuple[str, str]] = []  # bad headers found since `take_found` was last called

    def micro_batch(self, reader: int, num_readers: int, k: int, crop: str) -> tuple[Bucket, list[Item]]:
        """The k-th micro-batch of reader `reader` of `num_readers` in this phase."""
        state = self.readers.get((reader, num_readers))
        if state is None or state.emitted > k:
            state = self.readers[(reader, num_readers)] = _Reader()
        while state.emitted < k:  # fast-forward: headers only
            self._next(state, reader, num_readers)
        epoch, bucket_index, samples = self._next(state, reader, num_readers)
        return self.buckets[bucket_index], self._items(state, samples, bucket_index, epoch, crop)

    def take_found(self) -> list[tuple[str, str]]:
        """(name, reason) of the bad headers found since the last call (each once per process)."""
        found, self._unsent = self._unsent, []
        return found

    def _note(self, exc: BadSample) -> None:
        if self.on_bad_sample == "fail":
            raise exc
        self.skipped[exc.name] = exc.reason

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
            try:
                index = assign(*image_size(sample), self.buckets)
            except BadSample as exc:
                if exc.name not in self.skipped:
                    self._unsent.append((exc.name, exc.reason))
                self._note(exc)
                continue
            state.recent.setdefault(index, deque(maxlen=RECENT)).append(sample)
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

    def _items(self, state: _Reader, samples: list[Sample], bucket_index: int, epoch: int, crop: str) -> list[Item]:
        items = []
        for j, sample in enumerate(samples):
            try:
                items.append(self._item(sample, self.buckets[bucket_index], epoch, crop))
            except BadSample as exc:
                self._note(exc)
                items.append(self._stand_in(state, samples, j, bucket_index, epoch, crop))
        return items

    def _stand_in(self, state: _Reader, samples: list[Sample], j: int, bucket_index: int, epoch: int,
                  crop: str) -> Item:
        """An item in place of samples[j], which does not decode: the first candidate that does, in
        an order fixed by the stream (a fast-forwarded reader holds the same samples)."""
        name = f"{samples[j].shard}:{samples[j].key}"
        order = [bucket_index] + [b for b in sorted(state.recent) if b != bucket_index]
        recent = [s for b in order for s in reversed(state.recent[b])]
        for candidate in samples[j + 1:] + samples[:j] + recent:
            if f"{candidate.shard}:{candidate.key}" in self.skipped:
                continue  # known not to decode: trying again would give the same answer, slowly
            try:
                item = self._item(candidate, self.buckets[bucket_index], epoch, crop)
            except BadSample as exc:
                self._note(exc)
                continue
            return dataclasses.replace(item, skipped=((name, self.skipped[name]),))
        raise DataError(f"{name} fails to decode and so do the rest of its micro-batch and the last {RECENT} "
                        "samples of every bucket: there is no stand-in for it")

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
                "kept": counts.num_kept, "filtered": counts.num_filtered,
                "by_filter": filt.described(self.stream.filters, counts.by_filter) if counts.by_filter else [],
                "missing_image": counts.num_missing_image,
                "missing_caption": counts.num_missing_caption, **vars(totals), "skipped": len(self.skipped),
                "skipped_files": [{"file": name, "reason": reason} for name, reason in sorted(self.skipped.items())]}
