"""A source seen through one curriculum phase: which of its items the phase holds, the bucket each
goes to, and how an item becomes a (bucket-sized image, caption, label, cache key)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .buckets import Bucket, assign, cover_crop
from .filters import by_filter, passes
from .shapes import ShapesDataset, class_label, make_scene, render
from .sources import BadSample, DataError

RENDERER_VERSION = 1  # part of a shapes item's cache key; bump when rendering changes


@dataclass(frozen=True)
class Item:
    image: np.ndarray  # (H, W, 3) uint8, exactly the bucket's size
    caption: str
    label: int
    key: str  # everything the pixels depend on, for content-keyed caches
    skipped: tuple[tuple[str, str], ...] = ()  # (file, reason) of bad images this item stands in for


def caption_complexity(caption: str, meta: dict) -> int:
    """Level 1..5 of a real caption: a `complexity` metadata field when present, else its length
    (<= 5 words: 1, <= 10: 2, <= 20: 3, <= 40: 4, longer: 5). There is no standard measure
    (algorithms.md section 10); this one is simple and documented."""
    if isinstance(meta.get("complexity"), (int, float)):
        return int(min(5, max(1, meta["complexity"])))
    words = len(caption.split())
    return 1 + sum(words > limit for limit in (5, 10, 20, 40))


class ShapesPhase:
    """Procedural items rendered straight at their bucket's size; each index's aspect bucket is
    drawn uniformly from the phase's buckets (a pure function of the seed and the index)."""

    def __init__(self, block, seed: int, phase, buckets: tuple[Bucket, ...]):
        self.block, self.seed, self.buckets = block, seed, buckets
        self.band = tuple(phase.complexity)
        self.found = len(ShapesDataset(block, seed))
        # Scenes are only generated up front when filters need their captions (a million is slow).
        self.kept, self.by_filter = range(self.found), []
        if block.filters:
            captions = [make_scene(seed, i, self.band).caption for i in range(self.found)]
            self.kept = [i for i, caption in enumerate(captions) if passes(block.filters, caption, {})]
            self.by_filter = by_filter(block.filters, ((caption, {}) for caption in captions))

    def __len__(self) -> int:
        return len(self.kept)

    def assignments(self) -> list[int]:
        # One uniform draw per image index, vectorised (sources of a million images plan in a blink).
        draws = np.random.default_rng([self.seed, 0xA5]).integers(0, len(self.buckets), size=self.found)
        return draws[np.asarray(self.kept, dtype=np.int64)].tolist()

    def load(self, item: int, bucket: Bucket, epoch: int, crop: str) -> Item:
        index = self.kept[item]
        scene = make_scene(self.seed, index, self.band)
        image = render(scene, bucket.height, bucket.width, self.block.background)
        key = f"shapes:v{RENDERER_VERSION}:{self.seed}:{index}:{self.band}:{self.block.background}:{bucket.shape}"
        return Item(image, scene.caption, class_label(scene), key)

    def summary(self) -> dict:
        return {"source": "shapes", "found": self.found, "kept": len(self.kept),
                "filtered": self.found - len(self.kept), "by_filter": self.by_filter, "complexity": list(self.band),
                "skipped": 0, "skipped_files": []}


_REPLACEMENT_STREAM = 0xBAD  # tags the random stream that picks a stand-in for an image that fails to decode


class FolderPhase:
    """Images from a folder, kept when their caption's complexity is in the phase's band, resized to
    cover their bucket and cropped (centre, or at an offset seeded by (seed, epoch, item)).

    Bad images (data.on_bad_sample): every header is read here, before bucketing, so under `skip` an
    unreadable one never enters a batch; one whose pixels fail to decode at load time is replaced by
    another image of its bucket, picked from (seed, epoch, item) alone, so every rank, data-loader
    worker and resume picks the same one. `skipped` names each file left out or replaced (in this
    process: a decode failure is only known once some process has loaded the file).
    """

    def __init__(self, source, seed: int, phase, buckets: tuple[Bucket, ...], on_bad_sample: str = "fail"):
        self.source, self.seed, self.buckets, self.on_bad_sample = source, seed, buckets, on_bad_sample
        lo, hi = phase.complexity
        in_band = [i for i in range(len(source))
                   if lo <= caption_complexity(source.record(i).caption, source.record(i).meta) <= hi]
        self.num_in_band = len(in_band)
        self.skipped: dict[str, str] = {}  # file -> reason
        self.kept, self._buckets = [], []
        for i in in_band:
            try:
                self._buckets.append(assign(*source.size(i), buckets))
            except BadSample as exc:
                self._note(exc)
                continue
            self.kept.append(i)
        self._members: list[np.ndarray] | None = None  # items of each bucket, built at the first replacement

    def __len__(self) -> int:
        return len(self.kept)

    def assignments(self) -> list[int]:
        return list(self._buckets)

    def _note(self, exc: BadSample) -> None:
        if self.on_bad_sample == "fail":
            raise exc
        self.skipped[exc.name] = exc.reason

    def load(self, item: int, bucket: Bucket, epoch: int, crop: str) -> Item:
        failed = []
        for candidate in self._candidates(item, epoch):
            name = str(self.source.path(self.kept[candidate]))
            if name not in self.skipped:  # a file known to be bad is not decoded again: same outcome
                try:
                    loaded = self._load(candidate, bucket, epoch, crop)
                    return dataclasses.replace(loaded, skipped=tuple(failed)) if failed else loaded
                except BadSample as exc:
                    self._note(exc)
            failed.append((name, self.skipped[name]))
        raise DataError(f"every image of the {bucket.height}x{bucket.width} bucket fails to decode, so "
                        f"{failed[0][0]} has no stand-in (first failure: {failed[0][1]})")

    def _candidates(self, item: int, epoch: int):
        """The item, then (once it has failed) the other items of its bucket in an order drawn from
        (seed, epoch, item): the stand-in depends on nothing a process has seen before."""
        yield item
        if self._members is None:
            assignments = np.asarray(self._buckets, dtype=np.int64)
            self._members = [np.flatnonzero(assignments == b) for b in range(len(self.buckets))]
        others = self._members[self._buckets[item]]
        rng = np.random.default_rng([self.seed, epoch, self.kept[item], _REPLACEMENT_STREAM])
        yield from (int(j) for j in rng.permutation(others) if j != item)

    def _load(self, item: int, bucket: Bucket, epoch: int, crop: str) -> Item:
        index = self.kept[item]
        rng = np.random.default_rng([self.seed, epoch, index]) if crop == "random" else None
        image = cover_crop(self.source.image(index), bucket, crop, rng)
        where = f"random:{epoch}" if crop == "random" else "center"
        key = f"file:{self.source.content_hash(index)}:{bucket.shape}:{where}"
        return Item(image, self.source.record(index).caption, self.source.label(index), key)

    def summary(self) -> dict:
        """found = filtered + outside_complexity + kept + the files skipped for a bad header; files
        replaced after a failed decode are among `kept` and also in `skipped`."""
        counts = self.source.summary()
        return {"source": self.source.kind, "found": counts["num_found"], "kept": len(self.kept),
                "filtered": counts["num_filtered"], "by_filter": counts["by_filter"], "outside_complexity": counts["num_kept"] - self.num_in_band,
                "skipped": len(self.skipped),
                "skipped_files": [{"file": name, "reason": reason} for name, reason in sorted(self.skipped.items())]}
