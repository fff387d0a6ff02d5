"""The deterministic plan of one epoch over aspect buckets, and the addressing of its batches.

Design section 7 lists two complaints this module answers: buckets that silently drop data, and
step arithmetic that surprises. So every repeat and every drop is counted per bucket
(`EpochPlan.counts`, printed by `EpochPlan.report()`), the plan is a pure function of
(assignments, sizes, seed, epoch), and a global batch number maps to (epoch, batch) and back
(`EpochSchedule`), so a resumed run reads exactly the batches it would have read.

Algorithm (algorithms.md section 10): group items by bucket; shuffle each bucket; cut it into
global batches; complete the last one with repeats of the bucket's own items or drop it; with
`balanced`, give every non-empty bucket as many batches as the largest one (Playground v2.5: rare
aspect ratios must not be starved by square-dominated data); shuffle the order of the batches.

No torch here: `flowspec plan` uses this module to print the counts before anything runs.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .buckets import Bucket

REMAINDERS = ("repeat", "drop")
# Tags of the independent random streams of one epoch (one per bucket, one for the batch order):
# a bucket's batches do not change when another bucket gains or loses images.
_BUCKET_STREAM, _ORDER_STREAM = 0, 1


@dataclass(frozen=True)
class BucketCount:
    bucket: Bucket | None  # None when plan_epoch was not given the Bucket objects
    images: int    # items assigned to the bucket
    batches: int   # global batches it yields this epoch
    repeated: int  # extra appearances of its items (tail fill, balancing)
    dropped: int   # its items that appear in no batch this epoch


@dataclass(frozen=True)
class EpochPlan:
    batches: tuple[tuple[int, tuple[int, ...]], ...]  # (bucket index, items of one global batch)
    counts: tuple[BucketCount, ...]                    # one per bucket, in bucket order

    @property
    def num_batches(self) -> int:
        return len(self.batches)

    @property
    def num_images(self) -> int:
        return sum(c.images for c in self.counts)

    @property
    def total_repeated(self) -> int:
        return sum(c.repeated for c in self.counts)

    @property
    def total_dropped(self) -> int:
        return sum(c.dropped for c in self.counts)

    def report(self) -> str:
        """An aligned table: one line per bucket and a total line."""
        header = ("bucket", "ratio", "images", "batches", "repeated", "dropped")
        rows = [(_bucket_name(i, c.bucket), f"{c.bucket.ratio:.3f}" if c.bucket else "-",
                 str(c.images), str(c.batches), str(c.repeated), str(c.dropped))
                for i, c in enumerate(self.counts)]
        rows.append(("total", "", str(self.num_images), str(self.num_batches),
                     str(self.total_repeated), str(self.total_dropped)))
        widths = [max(len(row[k]) for row in [header, *rows]) for k in range(len(header))]
        lines = ["  ".join(cell.ljust(w) if k == 0 else cell.rjust(w) for k, (cell, w) in enumerate(zip(row, widths)))
                 for row in [header, *rows]]
        return "\n".join(line.rstrip() for line in lines)


def _bucket_name(index: int, bucket: Bucket | None) -> str:
    return f"{bucket.height}x{bucket.width}" if bucket else f"#{index}"


def _group(assignments: Sequence[int], num_buckets: int) -> list[np.ndarray]:
    """Item indices of each bucket, ascending (a canonical order before the seeded shuffle)."""
    a = np.asarray(assignments, dtype=np.int64).reshape(-1)
    if a.size and (a.min() < 0 or a.max() >= num_buckets):
        raise ValueError(f"assignments must lie in [0, {num_buckets}), got values in [{a.min()}, {a.max()}]")
    order = np.argsort(a, kind="stable")
    return np.split(order, np.cumsum(np.bincount(a, minlength=num_buckets))[:-1])


def _stream(items: np.ndarray, length: int, batch_size: int, rng: np.random.Generator) -> list[int]:
    """`length` draws from `items`: successive fresh permutations, so repeats spread evenly (no
    item appears twice more often than another).

    When the bucket holds at least a batch, a new permutation starts with items absent from the
    batch still being filled, so no batch holds an item twice; below a batch that cannot be
    avoided and the permutations are simply concatenated (vectorised: there can be many).
    """
    if length == 0:
        return []
    if len(items) < batch_size:
        cycles = -(-length // len(items))
        return items[rng.random((cycles, len(items))).argsort(axis=1)].reshape(-1)[:length].tolist()
    stream = rng.permutation(items).tolist()
    while len(stream) < length:
        open_batch = set(stream[len(stream) - len(stream) % batch_size:])
        cycle = rng.permutation(items).tolist()
        stream += [i for i in cycle if i not in open_batch] + [i for i in cycle if i in open_batch]
    return stream[:length]


def _check_plan_args(num_buckets: int, batch_size: int, seed: int, epoch: int, remainder: str,
                     buckets: Sequence[Bucket] | None) -> None:
    if num_buckets < 1 or batch_size < 1:
        raise ValueError(f"num_buckets and batch_size must be >= 1, got {num_buckets} and {batch_size}")
    if seed < 0 or epoch < 0:
        raise ValueError(f"seed and epoch must be >= 0, got {seed} and {epoch}")
    if remainder not in REMAINDERS:
        raise ValueError(f"remainder must be one of {REMAINDERS}, got {remainder!r}")
    if buckets is not None and len(buckets) != num_buckets:
        raise ValueError(f"got {len(buckets)} buckets but num_buckets={num_buckets}")


def plan_epoch(assignments: Sequence[int], num_buckets: int, batch_size: int, seed: int, epoch: int,
               remainder: str = "repeat", balanced: bool = False, *,
               buckets: Sequence[Bucket] | None = None) -> EpochPlan:
    """The batches of epoch `epoch`; `assignments[i]` is the bucket of item i, `batch_size` the
    GLOBAL batch (split it with `split`). `buckets` only labels the counts and the report.

    A bucket of n items yields ceil(n/B) batches (repeat) or floor(n/B) (drop); with `balanced`,
    every non-empty bucket yields the largest of those. Its L = batches * B slots are filled from
    `_stream`, so repeated = max(0, L - n) and dropped = max(0, n - L): which items are dropped
    changes from epoch to epoch. The number of batches does not depend on seed or epoch.
    """
    _check_plan_args(num_buckets, batch_size, seed, epoch, remainder, buckets)
    members = _group(assignments, num_buckets)
    rounding = (lambda n: -(-n // batch_size)) if remainder == "repeat" else (lambda n: n // batch_size)
    own = [rounding(len(items)) for items in members]
    largest = max(own)  # empty buckets have own == 0, so they never raise it
    batches: list[tuple[int, tuple[int, ...]]] = []
    counts: list[BucketCount] = []
    for index, items in enumerate(members):
        num = largest if balanced and len(items) else own[index]
        slots = num * batch_size
        rng = np.random.default_rng([seed, epoch, _BUCKET_STREAM, index])
        stream = _stream(items, slots, batch_size, rng)
        batches += [(index, tuple(stream[k:k + batch_size])) for k in range(0, slots, batch_size)]
        counts.append(BucketCount(buckets[index] if buckets is not None else None, len(items), num,
                                  max(0, slots - len(items)), max(0, len(items) - slots)))
    order = np.random.default_rng([seed, epoch, _ORDER_STREAM]).permutation(len(batches))
    return EpochPlan(tuple(batches[i] for i in order), tuple(counts))


@dataclass(frozen=True)
class EpochSchedule:
    """Global batch numbers 0, 1, 2, ... across epochs <-> (epoch, batch within the epoch).

    Every epoch of a fixed dataset has the same number of batches (see plan_epoch), so a trainer
    resuming at global batch k plans epoch `locate(k)[0]` and starts at `locate(k)[1]`.
    """
    batches_per_epoch: int

    def __post_init__(self):
        if self.batches_per_epoch < 1:
            raise ValueError(f"an epoch must have at least one batch, got {self.batches_per_epoch} (with "
                             "remainder='drop', every bucket smaller than a batch yields none)")

    def locate(self, k: int) -> tuple[int, int]:
        """(epoch, index within that epoch) of global batch k."""
        if k < 0:
            raise ValueError(f"global batch numbers are >= 0, got {k}")
        epoch, index = divmod(k, self.batches_per_epoch)
        return epoch, index

    def global_index(self, epoch: int, index: int) -> int:
        """The inverse of locate."""
        if epoch < 0 or not 0 <= index < self.batches_per_epoch:
            raise ValueError(f"need epoch >= 0 and 0 <= index < {self.batches_per_epoch}, got ({epoch}, {index})")
        return epoch * self.batches_per_epoch + index

    def num_epochs(self, num_batches: int) -> int:
        """Epochs touched (the last one possibly in part) by the first `num_batches` batches."""
        if num_batches < 0:
            raise ValueError(f"num_batches must be >= 0, got {num_batches}")
        return -(-num_batches // self.batches_per_epoch)


def split(batch: tuple[int, ...], world: int, rank: int, micro: int, accumulation: int) -> tuple[int, ...]:
    """The items that rank `rank` uses in micro-batch `micro` of a global batch.

    Global batch = world x accumulation x micro_size, cut into contiguous slices in (micro, rank)
    order: slice number micro * world + rank. So micro-step m of all ranks together reads the
    contiguous block m, and what has been consumed after m micro-steps is a prefix of the batch
    whatever the world size; with accumulation 1 it is plain per-rank contiguous sharding. The
    same order as `stream.BatchStream` (index * world + rank).
    """
    if world < 1 or accumulation < 1:
        raise ValueError(f"world and accumulation must be >= 1, got {world} and {accumulation}")
    if not 0 <= rank < world or not 0 <= micro < accumulation:
        raise ValueError(f"need 0 <= rank < {world} and 0 <= micro < {accumulation}, got {rank} and {micro}")
    parts = world * accumulation
    if len(batch) == 0 or len(batch) % parts:
        raise ValueError(f"a global batch of {len(batch)} does not split into world {world} x accumulation "
                         f"{accumulation} = {parts} equal micro-batches")
    size = len(batch) // parts
    start = (micro * world + rank) * size
    return tuple(batch[start:start + size])
