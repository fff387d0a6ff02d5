"""Webdataset through the batch stream: every sample once per epoch across readers (plus counted repeats),
exact resume by fast-forward, the same batches with any number of data-loader workers."""
import io
import tarfile
from collections import Counter

import numpy as np
import torch
from PIL import Image
from pydantic import TypeAdapter

from flowspec.runtime.data.loader import PrefetchingStream
from flowspec.runtime.data.stream import BatchStream
from flowspec.schemas.data import Data

SIZES = [(16, 32), (24, 24), (32, 16)]


def make_shards(folder, num_shards=6, per_shard=5):
    rng = np.random.default_rng(0)
    for s in range(num_shards):
        with tarfile.open(folder / f"shard-{s:03d}.tar", "w") as tar:
            for i in range(per_shard):
                key = f"s{s}_{i}"
                height, width = SIZES[(s + i) % 3]
                buffer = io.BytesIO()
                Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(buffer, "PNG")
                for ext, payload in (("png", buffer.getvalue()), ("txt", f"sample {key}".encode())):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    return f"{folder}/shard-{{000..{num_shards - 1:03d}}}.tar"


def data_block(urls):
    return TypeAdapter(Data).validate_python({
        "source": {"kind": "webdataset", "urls": urls},
        "curriculum": [{"at_step": 0, "resolution": 24, "aspect_ratios": [0.5, 1.0, 2.0], "complexity": [1, 5]}]})


def test_one_epoch_of_every_reader_covers_each_sample_once_plus_counted_repeats(tmp_path):
    from flowspec.runtime.data.buckets import make_buckets
    from flowspec.runtime.data.webdataset_phase import WebDatasetPhase, _Reader

    data = data_block(make_shards(tmp_path))
    phase = WebDatasetPhase(data.source, 4, data.curriculum[0], make_buckets(24, [0.5, 1.0, 2.0], 8), 2, data.buckets)
    readers, seen, repeated = 4, Counter(), 0
    for reader in range(readers):
        state = _Reader()
        while True:
            epoch, bucket_index, samples = phase._next(state, reader, readers)
            if epoch == 1:
                break  # every batch of epoch 0 has been handed out, its remainders included
            assert len(samples) == 2 and {phase.buckets[bucket_index].shape} == {
                phase.buckets[phase_bucket(phase, s)].shape for s in samples}
            seen.update(s.key for s in samples)
        repeated += state.counts.repeated
    assert set(seen) == {f"s{s}_{i}" for s in range(6) for i in range(5)}
    assert sum(seen.values()) == 30 + repeated and sum(n - 1 for n in seen.values()) == repeated


def phase_bucket(phase, sample):
    from flowspec.runtime.data.buckets import assign
    from flowspec.runtime.data.webdataset_stream import image_size

    return assign(*image_size(sample), phase.buckets)


def test_a_new_stream_fast_forwards_to_the_same_batch_and_workers_change_nothing(tmp_path):
    data = data_block(make_shards(tmp_path))
    continuous = BatchStream(data, 2, 2, 1, 8)
    batches = [continuous.batch(step, 0) for step in range(9)]
    resumed = BatchStream(data, 2, 2, 1, 8)
    for step in (8, 3):
        again = resumed.batch(step, 0)
        assert again.keys == batches[step].keys and torch.equal(again.x, batches[step].x)
    served = PrefetchingStream(BatchStream(data, 2, 2, 1, 8), accumulation=1, steps=9, num_workers=2,
                               prefetch_factor=2)
    plain = BatchStream(data, 2, 2, 1, 8)
    for step in range(9):
        a, b = plain.batch(step, 0), served.batch(step, 0)
        assert a.keys == b.keys and torch.equal(a.x, b.x)
