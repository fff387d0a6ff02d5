"""Micro-batches addressed by (step, micro-batch), as a pure function of the seed: resume is exact.

Each curriculum phase is planned on its own: its buckets (resolution, aspect ratios, the model's
size multiple), the items of each source that fall in its complexity band, and per epoch a
shuffled list of global batches, each from one bucket (runtime/data/epochs.py). A mixture
interleaves its components' batches in a fixed weighted pattern. The phase holding a step is a
function of the step, so phase changes land at the declared step, also after a resume.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch

from .buckets import make_buckets
from .epochs import EpochSchedule, plan_epoch, split
from .phases import FolderPhase, ShapesPhase
from .toy2d import Toy2DBatches


@dataclass
class Batch:
    x: torch.Tensor  # (B, 3, H, W) in [-1, 1], or (B, 2) points
    captions: list[str]
    class_labels: torch.Tensor | None
    height: int  # pixels (0 for points)
    width: int
    phase: int
    keys: list[str] | None = None  # content identity of each image (cache keys)
    offset: int = 0  # where these rows start in the step's global batch (runtime/core/randomness.py)
    total: int = 0  # size of the global batch; 0: this batch is all of it
    # Bad images replaced in this batch ({"component", "file", "reason"}; data.on_bad_sample: skip).
    # They travel with the batch so a data-loader worker's finds reach the main process's report.
    skipped: list[dict] = field(default_factory=list)


def _hash(*parts) -> int:
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class Mixing:
    """Which component global batch k comes from: a fixed pattern with integer shares (smooth weighted
    round robin), so the number of earlier batches of a component is O(1) to compute (exact resume)."""

    def __init__(self, weights: list[float], resolution: int = 100):
        total = sum(weights)
        self.shares = [max(1, round(resolution * w / total)) for w in weights]
        credit, pattern = [0] * len(weights), []
        for _ in range(sum(self.shares)):
            credit = [c + s for c, s in zip(credit, self.shares)]
            pick = max(range(len(credit)), key=lambda i: credit[i])
            credit[pick] -= sum(self.shares)
            pattern.append(pick)
        self.pattern = pattern
        self.before = [[pattern[:i].count(c) for i in range(len(pattern))] for c in range(len(weights))]

    def locate(self, k: int) -> tuple[int, int]:
        """(component, how many of its batches came before) for global batch k."""
        period, offset = divmod(k, len(self.pattern))
        component = self.pattern[offset]
        return component, period * self.shares[component] + self.before[component][offset]


class PhaseBatches:
    """The global batches of one curriculum phase."""

    def __init__(self, data, index: int, seed: int, global_batch: int, multiple: int, sources: dict):
        phase = data.curriculum[index]
        self.index, self.seed, self.global_batch, self.policy = index, seed, global_batch, data.buckets
        self.buckets = make_buckets(phase.resolution, phase.aspect_ratios, multiple)
        self.names, self.views, weights = [], [], []
        for name, weight, block in _components(data.source):
            self.names.append(name)
            weights.append((phase.mixture or {}).get(name, weight))
            view = ShapesPhase(block, seed, phase, self.buckets) if block.kind == "shapes" else \
                FolderPhase(sources[name], seed, phase, self.buckets, data.on_bad_sample)
            self.views.append(view)
        self.assignments = [view.assignments() for view in self.views]
        self.schedules = [EpochSchedule(self.plan(c, 0).num_batches) for c in range(len(self.views))]
        self.mixing = Mixing(weights)

    @lru_cache(maxsize=4)
    def plan(self, component: int, epoch: int):
        return plan_epoch(self.assignments[component], len(self.buckets), self.global_batch,
                          _hash(self.seed, "plan", self.index, component), epoch, self.policy.remainder,
                          self.policy.balanced, buckets=self.buckets)

    def batch(self, k: int):
        """(component, bucket, item indices, epoch) of the phase's k-th global batch."""
        component, j = self.mixing.locate(k)
        epoch, position = self.schedules[component].locate(j)
        bucket_index, items = self.plan(component, epoch).batches[position]
        return component, self.buckets[bucket_index], items, epoch

    def report(self) -> dict:
        out = {"phase": self.index, "buckets": [f"{b.height}x{b.width}" for b in self.buckets], "components": []}
        for c, view in enumerate(self.views):
            plan = self.plan(c, 0)
            out["components"].append({
                "name": self.names[c], "share": self.mixing.shares[c] / sum(self.mixing.shares), **view.summary(),
                "batches_per_epoch": plan.num_batches, "repeated": plan.total_repeated, "dropped": plan.total_dropped,
                "per_bucket": [{"bucket": f"{b.height}x{b.width}", "images": n.images, "batches": n.batches,
                                "repeated": n.repeated, "dropped": n.dropped}
                               for b, n in zip(self.buckets, plan.counts)]})
        return out


def _skipped(component: str, items) -> list[dict]:
    return [{"component": component, "file": name, "reason": reason} for it in items for name, reason in it.skipped]


def _components(source):
    if source.kind == "mixture":
        return [(c.name, c.weight, c.source) for c in source.components]
    return [(source.kind, 1.0, source)]


def open_source(block, spec_dir: str | None = None):
    """An index-addressable image source: an image folder, or a user's class (looked up beside the spec)."""
    if block.kind == "module":
        from .module_source import ModuleSource

        return ModuleSource(block, spec_dir)
    from .sources import ImageFolder

    return ImageFolder(block)


class BatchStream:
    def __init__(self, data, seed: int, micro_batch: int, accumulation: int, multiple: int,
                 rank: int = 0, world: int = 1, spec_dir: str | None = None):
        self.data, self.seed, self.size = data, seed, micro_batch
        self.accumulation, self.multiple, self.rank, self.world = accumulation, multiple, rank, world
        self.global_batch = micro_batch * accumulation * world
        if data.source.kind == "toy2d":
            self.toy = Toy2DBatches(data.source, seed)
            return
        # schemas/data.py refuses this at validate time: a mixture plans epochs from item counts.
        assert data.source.kind != "mixture" or all(c.source.kind != "webdataset" for c in data.source.components)
        self.sources = {name: open_source(block, spec_dir) for name, _, block in _components(data.source)
                        if block.kind in ("imagefolder", "module")}
        self._phases: dict[int, PhaseBatches] = {}

    def phase_at(self, step: int) -> int:
        """Index of the curriculum phase that holds (0-based) optimizer step `step`."""
        starts = [p.at_step for p in self.data.curriculum]
        return max(i for i, start in enumerate(starts) if start <= step)

    def phase(self, index: int) -> PhaseBatches:
        if index not in self._phases:
            self._phases[index] = PhaseBatches(self.data, index, self.seed, self.global_batch, self.multiple,
                                               self.sources)
        return self._phases[index]

    def batch(self, step: int, micro: int) -> Batch:
        index = self.phase_at(step)
        offset = (micro * self.world + self.rank) * self.size  # the slice order of epochs.split
        if self.data.source.kind == "toy2d":
            points = self.toy.batch(step, self.global_batch)[offset:offset + self.size]
            return Batch(points, [""] * self.size, None, 0, 0, index, offset=offset, total=self.global_batch)
        if self.data.source.kind == "webdataset":
            return self._streamed(step, micro, index, offset)
        phase = self.phase(index)
        component, bucket, items, epoch = phase.batch(step - self.data.curriculum[index].at_step)
        mine = split(items, self.world, self.rank, micro, self.accumulation)
        view = phase.views[component]
        loaded = [view.load(item, bucket, epoch, self.data.buckets.crop) for item in mine]
        images = torch.from_numpy(np.stack([it.image for it in loaded])).permute(0, 3, 1, 2)
        return Batch(images.float().div(127.5).sub(1.0), [it.caption for it in loaded],
                     torch.tensor([it.label for it in loaded]), bucket.height, bucket.width, index,
                     [it.key for it in loaded], offset=offset, total=len(items),
                     skipped=_skipped(phase.names[component], loaded))

    def note_skipped(self, batch: Batch) -> None:
        """Record the bad images a batch made in another process (a data-loader worker) in this
        process's report, as if they had been loaded here."""
        for entry in batch.skipped:
            if self.data.source.kind == "webdataset":
                target = self._streamed_phase(batch.phase)
            else:
                phase = self.phase(batch.phase)
                target = phase.views[phase.names.index(entry["component"])]
            target.skipped.setdefault(entry["file"], entry["reason"])

    def _streamed(self, step: int, micro: int, index: int, offset: int) -> Batch:
        """Webdataset: one reader per rank, so data-loader workers change the speed, never the data (each
        worker reads every header of its rank's shards and decodes only its own micro-batches)."""
        m = (step - self.data.curriculum[index].at_step) * self.accumulation + micro
        phase = self._streamed_phase(index)
        bucket, items = phase.micro_batch(self.rank, self.world, m, self.data.buckets.crop)
        images = torch.from_numpy(np.stack([it.image for it in items])).permute(0, 3, 1, 2)
        headers = [{"component": "webdataset", "file": name, "reason": reason} for name, reason in phase.take_found()]
        return Batch(images.float().div(127.5).sub(1.0), [it.caption for it in items], None,
                     bucket.height, bucket.width, index, [it.key for it in items], offset=offset,
                     total=self.global_batch, skipped=headers + _skipped("webdataset", items))

    def _streamed_phase(self, index: int):
        if index not in self._phases:
            from .webdataset_phase import WebDatasetPhase

            phase = self.data.curriculum[index]
            buckets = make_buckets(phase.resolution, phase.aspect_ratios, self.multiple)
            self._phases[index] = WebDatasetPhase(self.data.source, self.seed, phase, buckets, self.size,
                                                  self.data.buckets, self.data.on_bad_sample)
        return self._phases[index]

    def report(self) -> list[dict]:
        if self.data.source.kind == "toy2d":
            return []
        if self.data.source.kind == "webdataset":
            return [{"phase": i, "streamed": True, **phase.summary()} for i, phase in sorted(self._phases.items())]
        return [self.phase(i).report() for i in range(len(self.data.curriculum))]
