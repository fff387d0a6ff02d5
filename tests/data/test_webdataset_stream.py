"""Webdataset shards: reader splits cover every sample once, epochs reshuffle, resume is exact."""
import io
import json
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from flowspec.runtime.data import webdataset_stream as wds_stream
from flowspec.runtime.data.sources import DataError
from flowspec.runtime.data.webdataset_stream import Position, Sample, WebDatasetStream, decode, expand, image_size
from flowspec.schemas.data import Filter, WebDataset

NUM_SHARDS, PER_SHARD = 6, 5


# ------------------------------------------------------------------------------------ helpers
def image_bytes(width=4, height=3, fmt="PNG", color=(10, 200, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format=fmt)
    return buffer.getvalue()


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def sample_members(key: str, caption: str | None = "a caption", meta: dict | None = None,
                   ext: str = "png") -> list[tuple[str, bytes]]:
    members = [] if ext is None else [(f"{key}.{ext}", image_bytes(fmt="JPEG" if ext == "jpg" else "PNG"))]
    if caption is not None:
        members.append((f"{key}.txt", caption.encode()))
    if meta is not None:
        members.append((f"{key}.json", json.dumps(meta).encode()))
    return members


def write_shards(root: Path, num_shards=NUM_SHARDS, per_shard=PER_SHARD) -> str:
    """Shards shard-000.tar ...; sample k of shard s has key s{s}/k{k}, score k, alternating jpg/png."""
    for s in range(num_shards):
        members = []
        for k in range(per_shard):
            members += sample_members(f"s{s}/k{k}", f"shard {s} sample {k}", {"score": k}, ("png", "jpg")[k % 2])
        write_tar(root / f"shard-{s:03d}.tar", members)
    return str(root / f"shard-{{000..{num_shards - 1:03d}}}.tar")


def stream(urls: str, seed: int = 0, **block) -> WebDatasetStream:
    return WebDatasetStream(WebDataset(urls=urls, **block), seed)


def keys(pairs) -> list[str]:
    return [sample.key for _, sample in pairs]


# ------------------------------------------------------------------------------ shards and readers
def test_brace_patterns_expand_sorted_and_missing_shards_are_named(tmp_path):
    urls = write_shards(tmp_path)
    shards = stream(urls).shards
    assert shards == [str(tmp_path / f"shard-{s:03d}.tar") for s in range(NUM_SHARDS)]
    both = f"{tmp_path}/shard-{{003..005}}.tar::{tmp_path}/shard-{{000..002}}.tar"
    assert expand(both) == shards
    with pytest.raises(DataError, match=r"2 of 8 shard.* do not exist: .*shard-006.tar, .*shard-007.tar"):
        stream(str(tmp_path / "shard-{000..007}.tar"))
    with pytest.raises(DataError, match="only local shard files"):
        stream("https://example.com/shard-{0..3}.tar")


@pytest.mark.parametrize("num_readers", [1, 2, 3, 6])
def test_readers_cover_every_sample_exactly_once(tmp_path, num_readers):
    source = stream(write_shards(tmp_path), seed=3)
    everything = sorted(f"s{s}/k{k}" for s in range(NUM_SHARDS) for k in range(PER_SHARD))
    for epoch in (0, 1):
        per_reader = [keys(source.iterate(epoch, r, num_readers)) for r in range(num_readers)]
        shards = [source.reader_shards(epoch, r, num_readers) for r in range(num_readers)]
        assert sorted(s for r in shards for s in r) == source.shards  # each shard read by exactly one reader
        assert sorted(k for r in per_reader for k in r) == everything  # so: no duplicate, no gap
        assert all(len(r) == PER_SHARD * NUM_SHARDS // num_readers for r in per_reader)


def test_epochs_and_seeds_reshuffle_deterministically(tmp_path):
    urls = write_shards(tmp_path)
    source = stream(urls, seed=7)
    orders = [source.shard_order(epoch) for epoch in range(4)]
    assert all(sorted(order) == source.shards for order in orders)
    assert len({tuple(order) for order in orders}) == 4
    assert stream(urls, seed=7).shard_order(2) == orders[2]
    assert stream(urls, seed=8).shard_order(2) != orders[2]
    assert source.reader_shards(1, 1, 3) == orders[1][1::3]


def test_fewer_shards_than_readers_or_bad_reader_raise(tmp_path):
    source = stream(write_shards(tmp_path, num_shards=2))
    with pytest.raises(ValueError, match=r"2 shard\(s\) for 3 readers"):
        source.iterate(0, 0, 3)  # raises at the call, not at the first next()
    with pytest.raises(ValueError, match=r"reader 2 is not in \[0, 2\)"):
        source.reader_shards(0, 2, 2)
    with pytest.raises(ValueError, match="negative"):
        source.iterate(0, 0, 1, Position(0, -1))


# ------------------------------------------------------------------------------------ resume
def mixed_shards(root: Path) -> str:
    """Four shards with filtered, caption-less and image-less samples among the kept ones."""
    for s in range(4):
        members = []
        for k in range(4 + s):  # uneven shard lengths
            caption = None if (s, k) == (1, 2) else f"{'cat' if k == 3 else 'dog'} {s}.{k}"
            ext = None if (s, k) == (2, 0) else "png"
            members += sample_members(f"s{s}k{k}", caption, {"score": k}, ext)
        write_tar(root / f"part-{s}.tar", members)
    return str(root / "part-{0..3}.tar")


@pytest.mark.parametrize("reader, num_readers", [(0, 1), (0, 2), (1, 2)])
def test_resume_from_every_position_gives_exactly_the_rest(tmp_path, reader, num_readers):
    source = stream(mixed_shards(tmp_path), seed=1, filters=[Filter(contains="dog")])
    full = list(source.iterate(5, reader, num_readers))
    assert full and len({p for p, _ in full}) == len(full)
    starts = [(None, 0), (Position(0, 0), 0)] + [(p, i + 1) for i, (p, _) in enumerate(full)]
    for start, rest in starts:
        assert list(source.iterate(5, reader, num_readers, start)) == full[rest:]
    num_shards = len(source.reader_shards(5, reader, num_readers))
    assert list(source.iterate(5, reader, num_readers, Position(num_shards, 0))) == []
    # The end of one shard and the start of the next are the same place.
    for shard in range(num_shards - 1):
        after = [p for p, _ in full if p.shard == shard][-1]
        tail = list(source.iterate(5, reader, num_readers, after))
        assert tail == list(source.iterate(5, reader, num_readers, Position(shard + 1, 0)))


def test_resume_skips_earlier_shards_and_samples_without_reading_them(tmp_path, monkeypatch):
    source = stream(write_shards(tmp_path), seed=2)
    shards = source.reader_shards(0, 0, 2)
    opened, read = [], []
    real_open, real_read = tarfile.open, wds_stream._read
    monkeypatch.setattr(wds_stream.tarfile, "open", lambda path, **kw: opened.append(path) or real_open(path, **kw))
    monkeypatch.setattr(wds_stream, "_read", lambda tar, info: read.append(info.name) or real_read(tar, info))
    rest = list(source.iterate(0, 0, 2, Position(1, 3)))
    assert opened == shards[1:]
    assert len(rest) == (PER_SHARD - 3) + PER_SHARD * (len(shards) - 2)
    assert not any(name.startswith(rest[0][1].key.split("/")[0] + "/k0.") for name in read)
    assert len(read) == 3 * len(rest)  # caption, json and image of each yielded sample; none skipped


# ------------------------------------------------------------------------------------ counting
def test_missing_members_and_filters_are_counted_never_silent(tmp_path):
    source = stream(mixed_shards(tmp_path), filters=[Filter(contains="dog"), Filter(field="score", max=2)])
    kept = list(source.iterate(0, 0, 1))
    counts = source.counts
    total = sum(4 + s for s in range(4))
    assert counts.num_read == total
    assert counts.num_missing_caption == 1 and counts.num_missing_image == 1
    assert counts.num_kept == len(kept) == sum(min(3, 4 + s) for s in range(4)) - 2
    assert counts.num_kept + counts.num_filtered + 2 == total
    assert all(s.caption.startswith("dog") and s.meta["score"] <= 2 for _, s in kept)
    # each filter's count, after the ones before it: dogs among the complete samples, then those scoring <= 2
    complete = [(s, k) for s in range(4) for k in range(4 + s) if (s, k) not in ((1, 2), (2, 0))]
    dogs = [(s, k) for s, k in complete if k != 3]
    assert counts.by_filter == [len(dogs), len([1 for _, k in dogs if k <= 2])] == [len(dogs), len(kept)]


def test_a_filter_on_the_file_keeps_the_listed_sample_keys(tmp_path):
    source = stream(mixed_shards(tmp_path), filters=[Filter(field="file", one_of=["s0k1", "s3k5", "nowhere"])])
    assert sorted(s.key for _, s in source.iterate(0, 0, 1)) == ["s0k1", "s3k5"]  # shards in a seeded order


def test_missing_filter_field_counted(tmp_path):
    write_tar(tmp_path / "a.tar", sample_members("x", "c", {"score": 1}) + sample_members("y", "c")
              + sample_members("z", "c", {"other": 1}))
    source = stream(str(tmp_path / "a.tar"), filters=[Filter(field="score", min=0)])
    assert keys(source.iterate(0, 0, 1)) == ["x"]
    assert source.counts.missing_field == {"score": 2} and source.counts.num_filtered == 2


def test_image_and_caption_keys_follow_the_block(tmp_path):
    members = [("a.webp", image_bytes()), ("a.jpg", image_bytes(fmt="JPEG")), ("a.caption", b"alt"),
               ("a.TXT", b" main \n"), ("b.PNG", image_bytes()), ("b.txt", b"upper-case png")]
    write_tar(tmp_path / "k.tar", members)
    samples = [s for _, s in stream(str(tmp_path / "k.tar")).iterate(0, 0, 1)]
    assert [(s.key, s.caption) for s in samples] == [("a", "main"), ("b", "upper-case png")]
    assert Image.open(io.BytesIO(samples[0].image_bytes)).format == "JPEG"  # first of jpg;png;jpeg;webp
    custom = stream(str(tmp_path / "k.tar"), image_key="webp", caption_key="caption")
    assert [(s.key, s.caption) for _, s in custom.iterate(0, 0, 1)] == [("a", "alt")]
    assert custom.counts.num_missing_image == 1


def test_bad_json_member_names_shard_and_member(tmp_path):
    write_tar(tmp_path / "j.tar", sample_members("a") + [("a.json", b"{nope")])
    with pytest.raises(DataError, match=r"j.tar: member a.json is not valid JSON"):
        list(stream(str(tmp_path / "j.tar")).iterate(0, 0, 1))


# ----------------------------------------------------------------------------- layout and decode
def test_grouping_matches_the_webdataset_package(tmp_path):
    from webdataset.tariterators import group_by_keys, tar_file_expander

    members = (sample_members("dir/a.b", "dotted name") + [("__meta__.json", b"{}")]
               + sample_members("dir/c", "c", {"k": 1}) + [("loose", b"no extension")]
               + sample_members("d", None, ext="jpg"))
    path = write_tar(tmp_path / "w.tar", members)
    with open(path, "rb") as handle:
        theirs = list(group_by_keys(tar_file_expander([{"url": str(path), "stream": handle}])))
    with tarfile.open(path) as tar:
        ours = [(key, sorted(group)) for key, group in wds_stream._groups(tar)]
    assert ours == [(s["__key__"], sorted(k for k in s if not k.startswith("__"))) for s in theirs]


def test_decode_and_header_only_size(tmp_path):
    data = image_bytes(width=9, height=5)
    sample = Sample("k", "c", {}, data, "x.tar")
    image = decode(sample)
    assert image.mode == "RGB" and image.size == (9, 5)
    truncated = Sample("k", "c", {}, data[:data.index(b"IDAT") + 6], "x.tar")  # header intact, pixels gone
    assert image_size(truncated) == (5, 9) == WebDatasetStream.image_size(sample)
    with pytest.raises(DataError, match="x.tar:k"):
        decode(truncated)
    with pytest.raises(DataError, match="x.tar:k: cannot read the image"):
        image_size(Sample("k", "c", {}, b"not an image", "x.tar"))
