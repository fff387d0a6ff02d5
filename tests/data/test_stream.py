"""The batch stream: nothing lost across ranks, micro-batches and workers; phases land on their step;
every micro-batch is one bucket; a fresh stream (a resume) serves exactly the same batches."""
from collections import Counter

import pytest
import torch
from flowspec.runtime.data.loader import PrefetchingStream
from flowspec.runtime.data.stream import BatchStream, Mixing
from flowspec.schemas.data import Data
from pydantic import TypeAdapter

DATA = TypeAdapter(Data)


def shapes_data(num_images=48, ratios=(0.5, 1.0, 2.0), remainder="repeat"):
    return DATA.validate_python({
        "source": {"kind": "shapes", "num_images": num_images},
        "curriculum": [{"at_step": 0, "resolution": 16, "complexity": [1, 1]},
                       {"at_step": 7, "resolution": 24, "aspect_ratios": list(ratios), "complexity": [1, 2]}],
        "buckets": {"remainder": remainder}})


def epoch_keys(data, world, accumulation, micro, phase_index):
    streams = [BatchStream(data, 3, micro, accumulation, 8, rank=r, world=world) for r in range(world)]
    phase = streams[0].phase(phase_index)
    start = data.curriculum[phase_index].at_step
    steps = phase.schedules[0].batches_per_epoch
    keys = []
    for step in range(start, start + steps):
        for rank, stream in enumerate(streams):
            for m in range(accumulation):
                batch = stream.batch(step, m)
                assert batch.x.shape[0] == micro and batch.phase == phase_index
                assert (batch.height, batch.width) in [(b.height, b.width) for b in phase.buckets]
                keys += batch.keys
    return keys, phase


@pytest.mark.parametrize("world,accumulation,micro", [(1, 1, 6), (2, 1, 3), (2, 3, 1), (3, 2, 2)])
@pytest.mark.parametrize("remainder", ["repeat", "drop"])
def test_one_epoch_over_all_ranks_holds_every_image_once_plus_the_reported_repeats(world, accumulation, micro, remainder):
    data = shapes_data(remainder=remainder)
    keys, phase = epoch_keys(data, world, accumulation, micro, phase_index=1)
    images = Counter(k.split(":")[3] for k in keys)  # the image index inside the key
    report = phase.report()["components"][0]
    if remainder == "repeat":
        assert set(images) == {str(i) for i in range(48)}
    assert sum(images.values()) == 48 + report["repeated"] - report["dropped"]
    assert sum(n - 1 for n in images.values()) == report["repeated"]


def test_phases_change_exactly_at_their_step_and_a_new_stream_serves_identical_batches():
    data = shapes_data()
    first, second = BatchStream(data, 5, 4, 1, 8), BatchStream(data, 5, 4, 1, 8)
    assert [first.phase_at(s) for s in (0, 6, 7, 30)] == [0, 0, 1, 1]
    for step in (0, 6, 7, 8, 29):
        a, b = first.batch(step, 0), second.batch(step, 0)
        assert a.phase == (1 if step >= 7 else 0)
        assert a.keys == b.keys and torch.equal(a.x, b.x) and a.captions == b.captions
    assert first.batch(6, 0).height == 16 and first.batch(7, 0).height in (16, 24, 32)  # 24 px buckets: 16x32, 24x24, 32x16


def test_workers_serve_the_same_batches_as_the_stream_in_any_order_of_requests():
    data = shapes_data()
    plain = BatchStream(data, 1, 3, 2, 8)
    served = PrefetchingStream(BatchStream(data, 1, 3, 2, 8), accumulation=2, steps=12, num_workers=2,
                               prefetch_factor=2)
    for step, micro in [(0, 0), (0, 1), (1, 0), (1, 1), (9, 0), (9, 1), (10, 0), (4, 1)]:
        a, b = plain.batch(step, micro), served.batch(step, micro)
        assert a.keys == b.keys and torch.equal(a.x, b.x)


def test_mixing_pattern_matches_the_weights_and_counts_earlier_batches_exactly():
    mixing = Mixing([3.0, 1.0])
    picks = [mixing.locate(k) for k in range(400)]
    share = sum(1 for c, _ in picks if c == 0) / len(picks)
    assert share == pytest.approx(0.75, abs=0.01)
    for k, (component, before) in enumerate(picks):
        assert before == sum(1 for c, _ in picks[:k] if c == component)


@pytest.mark.parametrize("source", ["shapes", "toy2d"])
@pytest.mark.parametrize("world,accumulation", [(2, 1), (2, 2), (3, 1)])
def test_ranks_together_read_exactly_the_one_process_global_batch(source, world, accumulation):
    """`--nproc N` trains on the same global batches as 1 process: same rows, same places (offsets)."""
    data = shapes_data() if source == "shapes" else DATA.validate_python(
        {"source": {"kind": "toy2d", "distribution": {"kind": "checkerboard"}}})
    micro = 2
    single = BatchStream(data, 3, micro * world, accumulation, 8)
    ranks = [BatchStream(data, 3, micro, accumulation, 8, rank=r, world=world) for r in range(world)]
    for step in (0, 5, 9):
        for m in range(accumulation):
            one = single.batch(step, m)
            parts = sorted((stream.batch(step, m) for stream in ranks), key=lambda b: b.offset)
            assert one.offset == m * micro * world and one.total == micro * world * accumulation
            assert [p.offset for p in parts] == [one.offset + r * micro for r in range(world)]
            assert all(p.total == one.total for p in parts)
            assert torch.equal(torch.cat([p.x for p in parts]), one.x)
            assert sum((p.captions for p in parts), []) == one.captions
