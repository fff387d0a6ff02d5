"""Epoch plans over buckets (homogeneous full batches, every repeat and drop counted), the global batch
schedule and the (micro, rank) split of a global batch."""
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowspec.runtime.data.buckets import Bucket
from flowspec.runtime.data.epochs import EpochSchedule, plan_epoch, split


@st.composite
def plans(draw):
    num_buckets = draw(st.integers(1, 6))
    # skewed sizes: some buckets empty, some below a batch, some large
    assignments = draw(st.lists(st.integers(0, num_buckets - 1) | st.just(0), max_size=150))
    return {"assignments": assignments, "num_buckets": num_buckets, "batch_size": draw(st.integers(1, 12)),
            "seed": draw(st.integers(0, 2 ** 32)), "epoch": draw(st.integers(0, 5)),
            "remainder": draw(st.sampled_from(["repeat", "drop"])), "balanced": draw(st.booleans())}


def ceil_div(a, b):
    return -(-a // b)


@given(plans())
def test_batches_are_full_and_homogeneous(args):
    plan = plan_epoch(**args)
    for bucket, items in plan.batches:
        assert len(items) == args["batch_size"]
        assert {args["assignments"][i] for i in items} == {bucket}
        if Counter(args["assignments"])[bucket] >= args["batch_size"]:
            assert len(set(items)) == len(items)  # a bucket that fills a batch never repeats inside one


@given(plans())
def test_every_repeat_and_drop_is_counted(args):
    plan = plan_epoch(**args)
    assignments, size = args["assignments"], args["batch_size"]
    seen = Counter(i for _, items in plan.batches for i in items)
    assert sum(c.images for c in plan.counts) == len(assignments) == plan.num_images
    assert len(plan.counts) == args["num_buckets"]
    for index, count in enumerate(plan.counts):
        members = [i for i, b in enumerate(assignments) if b == index]
        assert count.images == len(members)
        assert count.batches == sum(1 for b, _ in plan.batches if b == index)
        appearances = [seen[i] for i in members]
        # the multiset of the bucket's items = all its items + the reported repeats - the reported drops
        assert sum(appearances) == count.batches * size == count.images + count.repeated - count.dropped
        assert count.dropped == appearances.count(0)
        if count.dropped:
            assert max(appearances) <= 1 and count.repeated == 0
        if members and not count.dropped:
            assert max(appearances) - min(appearances) <= 1  # repeats are spread evenly
    assert plan.total_repeated == sum(c.repeated for c in plan.counts)
    assert plan.total_dropped == sum(c.dropped for c in plan.counts)
    assert plan.num_batches == len(plan.batches) == sum(c.batches for c in plan.counts)


@given(plans())
def test_batch_counts_follow_the_remainder_and_balance_rules(args):
    plan = plan_epoch(**args)
    size, repeat = args["batch_size"], args["remainder"] == "repeat"
    own = [ceil_div(c.images, size) if repeat else c.images // size for c in plan.counts]
    for count, expected in zip(plan.counts, own):
        if count.images == 0:
            assert (count.batches, count.repeated, count.dropped) == (0, 0, 0)
        elif args["balanced"]:
            assert count.batches == max(own)  # every non-empty bucket as many as the largest
        else:
            assert count.batches == expected
            if repeat:
                assert count.dropped == 0 and count.repeated < size
            else:
                assert count.repeated == 0 and count.dropped < size


@given(plans())
def test_repeat_keeps_every_item_and_drop_repeats_none(args):
    plan = plan_epoch(**{**args, "balanced": False})
    seen = Counter(i for _, items in plan.batches for i in items)
    if args["remainder"] == "repeat":
        assert set(seen) == set(range(len(args["assignments"])))
        assert sum(seen.values()) == len(args["assignments"]) + plan.total_repeated and plan.total_dropped == 0
    else:
        assert max(seen.values(), default=1) == 1
        assert len(args["assignments"]) - len(seen) == plan.total_dropped and plan.total_repeated == 0


def test_a_bucket_smaller_than_a_batch_is_filled_from_its_own_items():
    plan = plan_epoch([0, 1, 1, 0, 0], 2, 4, seed=3, epoch=0)
    by_bucket = {b: items for b, items in plan.batches}
    assert Counter(by_bucket[1]) == Counter({1: 2, 2: 2})  # two items, each twice
    assert sorted(set(by_bucket[0])) == [0, 3, 4]
    assert [c.repeated for c in plan.counts] == [1, 2]
    dropped = plan_epoch([0, 1, 1, 0, 0], 2, 4, seed=3, epoch=0, remainder="drop")
    assert dropped.num_batches == 0 and dropped.total_dropped == 5


def test_balanced_lifts_a_rare_bucket_to_the_largest():
    assignments = [0] * 40 + [1] * 3 + [2] * 0
    plan = plan_epoch(assignments, 3, 8, seed=0, epoch=1, balanced=True)
    assert [c.batches for c in plan.counts] == [5, 5, 0]
    assert [c.repeated for c in plan.counts] == [0, 37, 0]


def test_plans_are_deterministic_and_change_with_the_epoch_and_seed():
    args = {"assignments": [i % 3 for i in range(100)], "num_buckets": 3, "batch_size": 4}
    first = plan_epoch(**args, seed=5, epoch=2)
    assert first == plan_epoch(**args, seed=5, epoch=2)
    assert first.batches != plan_epoch(**args, seed=5, epoch=3).batches
    assert first.batches != plan_epoch(**args, seed=6, epoch=2).batches
    # the order of the buckets changes, not only the batches' contents
    assert [b for b, _ in first.batches] != [b for b, _ in plan_epoch(**args, seed=5, epoch=3).batches]
    # the contents of the batches change, not only their order
    assert set(first.batches) != set(plan_epoch(**args, seed=5, epoch=3).batches)
    assert first.num_batches == plan_epoch(**args, seed=9, epoch=7).num_batches  # fixed per dataset


def test_drop_drops_different_items_each_epoch():
    dropped = set()
    for epoch in range(10):
        plan = plan_epoch([0] * 10, 1, 4, seed=0, epoch=epoch, remainder="drop")
        dropped |= set(range(10)) - {i for _, items in plan.batches for i in items}
    assert len(dropped) > 2  # two are dropped per epoch, not always the same two


def test_repeats_fall_on_different_items_each_epoch():
    repeated = set()
    for epoch in range(10):
        (_, items), = plan_epoch([0, 0, 0], 1, 4, seed=0, epoch=epoch).batches
        repeated |= {i for i, n in Counter(items).items() if n == 2}
    assert repeated == {0, 1, 2}


@pytest.mark.parametrize("balanced", [False, True])
def test_no_item_twice_in_a_batch_when_the_bucket_fills_one(balanced):
    for seed in range(20):  # 5 items, batches of 4: the second batch mixes two shuffles of the bucket
        plan = plan_epoch([0] * 5 + [1] * 13, 2, 4, seed=seed, epoch=0, balanced=balanced)
        assert all(len(set(items)) == 4 for _, items in plan.batches)


def test_a_bucket_does_not_change_when_another_grows():
    small = plan_epoch([0, 1] * 20, 2, 4, seed=1, epoch=0)
    grown = plan_epoch([0, 1] * 20 + [1] * 9, 2, 4, seed=1, epoch=0)
    assert {b for b in small.batches if b[0] == 0} == {b for b in grown.batches if b[0] == 0}


def test_report_is_an_aligned_table_with_a_total():
    buckets = (Bucket(64, 64, 1.0), Bucket(48, 80, 0.6), Bucket(80, 48, 1.66))
    plan = plan_epoch([0] * 10 + [1] * 3, 3, 4, seed=0, epoch=0, buckets=buckets)
    lines = plan.report().splitlines()
    assert len(lines) == 1 + 3 + 1 and len({len(line) for line in lines}) == 1
    assert lines[0].split() == ["bucket", "ratio", "images", "batches", "repeated", "dropped"]
    assert lines[1].split() == ["64x64", "1.000", "10", "3", "2", "0"]
    assert lines[2].split() == ["48x80", "0.600", "3", "1", "1", "0"]
    assert lines[3].split() == ["80x48", "1.660", "0", "0", "0", "0"]
    assert lines[4].split() == ["total", "13", "4", "3", "0"]
    assert plan_epoch([0], 1, 1, 0, 0).report().splitlines()[1].split()[0] == "#0"  # no Bucket objects given


@pytest.mark.parametrize("kwargs", [{"remainder": "pad"}, {"batch_size": 0}, {"num_buckets": 1},
                                    {"seed": -1}, {"epoch": -1}, {"buckets": (Bucket(8, 8, 1.0),)}])
def test_plan_epoch_rejects_bad_arguments(kwargs):
    args = {"assignments": [0, 1, 1], "num_buckets": 2, "batch_size": 2, "seed": 0, "epoch": 0}
    with pytest.raises(ValueError):
        plan_epoch(**{**args, **kwargs})


# ------------------------------------------------------------------------------------- schedule
@given(per_epoch=st.integers(1, 1000), k=st.integers(0, 10 ** 7))
def test_schedule_round_trip(per_epoch, k):
    schedule = EpochSchedule(per_epoch)
    epoch, index = schedule.locate(k)
    assert 0 <= index < per_epoch and schedule.global_index(epoch, index) == k
    assert schedule.locate(schedule.global_index(epoch, index)) == (epoch, index)
    following = schedule.locate(k + 1)
    assert following == ((epoch, index + 1) if index + 1 < per_epoch else (epoch + 1, 0))
    assert schedule.num_epochs(k + 1) == epoch + 1


def test_schedule_addresses_the_batches_of_consecutive_epochs():
    args = {"assignments": [i % 4 for i in range(30)], "num_buckets": 4, "batch_size": 3, "seed": 11}
    epochs = [plan_epoch(**args, epoch=e).batches for e in range(3)]
    flat = [batch for batches in epochs for batch in batches]
    schedule = EpochSchedule(len(epochs[0]))
    for k in range(len(flat)):  # resuming at global batch k reads exactly the batch an unbroken run reads
        epoch, index = schedule.locate(k)
        assert plan_epoch(**args, epoch=epoch).batches[index] == flat[k]


def test_schedule_rejects_bad_arguments():
    with pytest.raises(ValueError):
        EpochSchedule(0)  # e.g. remainder="drop" and every bucket smaller than a batch
    schedule = EpochSchedule(5)
    for call in (lambda: schedule.locate(-1), lambda: schedule.global_index(0, 5),
                 lambda: schedule.global_index(-1, 0), lambda: schedule.num_epochs(-1)):
        with pytest.raises(ValueError):
            call()


# ---------------------------------------------------------------------------------------- split
@given(world=st.integers(1, 6), accumulation=st.integers(1, 6), micro_size=st.integers(1, 4), offset=st.integers(0, 99))
def test_split_partitions_the_global_batch(world, accumulation, micro_size, offset):
    batch = tuple(range(offset, offset + world * accumulation * micro_size))[::-1]
    slices = {(rank, micro): split(batch, world, rank, micro, accumulation)
              for rank in range(world) for micro in range(accumulation)}
    assert all(len(s) == micro_size for s in slices.values())
    assert sorted(i for s in slices.values() for i in s) == sorted(batch)  # nothing duplicated or lost
    # the documented order: contiguous slices, micro-major then rank
    assert sum((slices[rank, micro] for micro in range(accumulation) for rank in range(world)), ()) == batch


def test_split_order_is_micro_then_rank():
    batch = tuple(range(8))
    assert split(batch, world=2, rank=1, micro=0, accumulation=2) == (2, 3)
    assert split(batch, world=2, rank=0, micro=1, accumulation=2) == (4, 5)


@pytest.mark.parametrize("args", [
    ((1, 2, 3), 2, 0, 0, 1),        # 3 items over 2 ranks
    (tuple(range(8)), 2, 0, 0, 3),  # 8 items over 2 x 3
    ((), 1, 0, 0, 1),               # empty
    (tuple(range(4)), 2, 2, 0, 1),  # rank out of range
    (tuple(range(4)), 2, 0, 2, 2),  # micro out of range
    (tuple(range(4)), 0, 0, 0, 1),  # no ranks
    (tuple(range(4)), 1, 0, 0, 0),  # no micro-batches
])
def test_split_rejects_bad_sizes(args):
    with pytest.raises(ValueError):
        split(*args)
