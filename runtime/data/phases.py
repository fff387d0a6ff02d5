"""A source seen through one curriculum phase: which of its items the phase holds, the bucket each
goes to, and how an item becomes a (bucket-sized image, caption, label, cache key)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .buckets import Bucket, assign, cover_crop
from .filters import passes
from .shapes import ShapesDataset, class_label, make_scene, render

RENDERER_VERSION = 1  # part of a shapes item's cache key; bump when rendering changes


@dataclass(frozen=True)
class Item:
    image: np.ndarray  # (H, W, 3) uint8, exactly the bucket's size
    caption: str
    label: int
    key: str  # everything the pixels depend on, for content-keyed caches


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
        self.kept = range(self.found) if not block.filters else [
            i for i in range(self.found) if passes(block.filters, make_scene(seed, i, self.band).caption, {})]

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
                "filtered": self.found - len(self.kept), "complexity": list(self.band)}


class FolderPhase:
    """Images from a folder, kept when their caption's complexity is in the phase's band, resized to
    cover their bucket and cropped (centre, or at an offset seeded by (seed, epoch, item))."""

    def __init__(self, source, seed: int, phase, buckets: tuple[Bucket, ...]):
        self.source, self.seed, self.buckets = source, seed, buckets
        lo, hi = phase.complexity
        self.kept = [i for i in range(len(source))
                     if lo <= caption_complexity(source.record(i).caption, source.record(i).meta) <= hi]

    def __len__(self) -> int:
        return len(self.kept)

    def assignments(self) -> list[int]:
        return [assign(*self.source.size(i), self.buckets) for i in self.kept]

    def load(self, item: int, bucket: Bucket, epoch: int, crop: str) -> Item:
        index = self.kept[item]
        rng = np.random.default_rng([self.seed, epoch, index]) if crop == "random" else None
        image = cover_crop(self.source.image(index), bucket, crop, rng)
        where = f"random:{epoch}" if crop == "random" else "center"
        key = f"file:{self.source.content_hash(index)}:{bucket.shape}:{where}"
        return Item(image, self.source.record(index).caption, 0, key)

    def summary(self) -> dict:
        counts = self.source.summary()
        return {"source": "imagefolder", "found": counts["num_found"], "kept": len(self.kept),
                "filtered": counts["num_filtered"], "outside_complexity": counts["num_kept"] - len(self.kept)}
