"""Streaming tar shards in the webdataset layout, split across readers, resumable by position.

Layout (as webdataset writes and reads it): a shard is a tar whose consecutive members
`<key>.<ext>` form one sample; `<key>` is the member path up to the first dot of its file name
and the extension is lower-cased; `__...__` members are metadata, not samples. Readers are
ranks x dataloader workers: each epoch the shards are shuffled with (seed, epoch) and reader r of
R takes shards r, r+R, r+2R, ... A `Position` (shard in the reader's list, sample in that shard)
is all it takes to resume a reader exactly; shards before it are not opened and samples before
it in its shard are skipped by reading tar headers only.

Only local shard files are supported: flowspec runs offline by construction (design section 6).
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field

import braceexpand
from PIL import Image

from . import filters as filt
from .sources import DataError, decode_rgb, header_size, listing, open_image

# The same splitting and metadata rules as webdataset.tariterators (base_plus_ext, skip_meta),
# so shards written for webdataset group into the same samples here.
_KEY_EXT = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")
_SKIP_META = re.compile(r"__[^/]*__($|/)")


@dataclass(frozen=True)
class Position:
    shard: int  # index in the reader's shard list for the epoch
    sample: int  # index of the sample (member group) within that shard, skipped ones included


@dataclass(frozen=True)
class Sample:
    key: str
    caption: str
    meta: dict
    image_bytes: bytes
    shard: str


@dataclass
class StreamCounts:
    """What this stream object has read (per process: sum over readers for a run-wide total)."""
    num_read: int = 0  # member groups examined = kept + filtered + missing_image + missing_caption
    num_kept: int = 0
    num_filtered: int = 0
    num_missing_image: int = 0  # no member with any of image_key's extensions
    num_missing_caption: int = 0  # has an image but no caption member
    missing_field: dict[str, int] = field(default_factory=dict)  # filtered field absent from .json
    by_filter: list[int] = field(default_factory=list)  # samples left after each filter, in order


def expand(urls: str) -> list[str]:
    """Shard paths from a pattern: '::'-separated parts, braces expanded (as webdataset does), sorted."""
    paths = []
    for part in urls.split("::"):
        part = part.strip()
        if "://" in part or part.startswith("pipe:"):
            raise DataError(f"shard url {part!r}: only local shard files are supported (flowspec runs offline)")
        paths.extend(os.path.expanduser(p) for p in braceexpand.braceexpand(part) if p)
    if not paths:
        raise DataError(f"urls {urls!r} names no shard")
    return sorted(dict.fromkeys(paths))


def image_size(sample: Sample) -> tuple[int, int]:
    """(height, width) from the image header, without decoding the pixels (BadSample names shard:key)."""
    return header_size(sample.image_bytes, f"{sample.shard}:{sample.key}")


def decode(sample: Sample) -> Image.Image:
    """The sample's image in RGB, as displayed (EXIF rotation applied); BadSample names shard:key."""
    name = f"{sample.shard}:{sample.key}"
    with open_image(sample.image_bytes, name) as image:
        return decode_rgb(image, name)


def _groups(tar: tarfile.TarFile) -> Iterator[tuple[str, dict[str, tarfile.TarInfo]]]:
    """(key, {extension: member}) for consecutive members sharing a key; reads headers only."""
    key, group = None, {}
    for info in tar:
        name = info.name
        if not info.isreg() or _SKIP_META.match(name):
            continue
        match = _KEY_EXT.match(name)
        if match is None:
            continue
        prefix, ext = match.group(1), match.group(2).lower()
        if prefix != key:
            if group:
                yield key, group
            key, group = prefix, {}
        if ext in group:
            raise DataError(f"{tar.name}: member {name} repeats extension .{ext} of sample {key}")
        group[ext] = info
    if group:
        yield key, group


class WebDatasetStream:
    """The `webdataset` source block as a deterministic, shardable, resumable stream."""

    decode = staticmethod(decode)
    image_size = staticmethod(image_size)

    def __init__(self, block, seed: int):
        self.seed = seed
        self.image_keys = [k.strip().lower() for k in block.image_key.split(";") if k.strip()]
        self.caption_key = block.caption_key.strip().lower()
        self.num_samples = block.num_samples
        self.filters = list(block.filters)
        filt.validate(self.filters)
        self.shards = expand(block.urls)
        missing = [p for p in self.shards if not os.path.isfile(p)]
        if missing:
            raise DataError(f"{len(missing)} of {len(self.shards)} shard file(s) from {block.urls!r} do not exist: "
                            f"{listing(missing)}")
        self.counts = StreamCounts()

    def shard_order(self, epoch: int) -> list[str]:
        """All shards in this epoch's order: a permutation seeded by (seed, epoch) only."""
        digest = hashlib.blake2b(f"webdataset-shards:{self.seed}:{epoch}".encode(), digest_size=8).digest()
        order = list(self.shards)
        random.Random(int.from_bytes(digest, "little")).shuffle(order)
        return order

    def reader_shards(self, epoch: int, reader: int, num_readers: int) -> list[str]:
        """Reader r's shards: r, r+R, r+2R, ... of the epoch's order (disjoint, and together all)."""
        if not 0 <= reader < num_readers:
            raise ValueError(f"reader {reader} is not in [0, {num_readers})")
        if len(self.shards) < num_readers:
            raise ValueError(
                f"{len(self.shards)} shard(s) for {num_readers} readers (ranks x dataloader workers): every reader "
                "needs at least one shard; write more, smaller shards or use fewer workers")
        return self.shard_order(epoch)[reader::num_readers]

    def iterate(self, epoch: int, reader: int, num_readers: int,
                start: Position | None = None) -> Iterator[tuple[Position, Sample]]:
        """(position of the NEXT sample, sample) for this reader's kept samples, from `start` on."""
        shards = self.reader_shards(epoch, reader, num_readers)  # raises now, not at the first next()
        start = start or Position(0, 0)
        if start.shard < 0 or start.sample < 0:
            raise ValueError(f"position {start} has a negative index")
        return self._iterate(shards, start)

    def _iterate(self, shards: list[str], start: Position) -> Iterator[tuple[Position, Sample]]:
        for s in range(start.shard, len(shards)):
            skip = start.sample if s == start.shard else 0
            for index, sample in self._shard_samples(shards[s], skip):
                yield Position(s, index + 1), sample

    def _shard_samples(self, path: str, skip: int) -> Iterator[tuple[int, Sample]]:
        with _open_tar(path) as tar:
            for index, (key, group) in enumerate(_groups(tar)):
                if index < skip:
                    continue  # resuming: only the header was read
                sample = self._sample(tar, path, key, group)
                if sample is not None:
                    yield index, sample

    def _sample(self, tar: tarfile.TarFile, path: str, key: str, group: dict) -> Sample | None:
        counts = self.counts
        counts.num_read += 1
        image_ext = next((ext for ext in self.image_keys if ext in group), None)
        if image_ext is None:
            counts.num_missing_image += 1
            return None
        if self.caption_key not in group:
            counts.num_missing_caption += 1
            return None
        caption = _text(tar, path, group[self.caption_key]).strip()
        meta = _json(tar, path, group["json"]) if "json" in group else {}
        filtered_on = filt.with_file(meta, key)  # `field: file` is the sample's key
        for name in filt.missing_fields(self.filters, caption, filtered_on):
            counts.missing_field[name] = counts.missing_field.get(name, 0) + 1
        passed = filt.passed_count(self.filters, caption, filtered_on)
        counts.by_filter = counts.by_filter or [0] * len(self.filters)
        for i in range(passed):
            counts.by_filter[i] += 1
        if passed < len(self.filters):
            counts.num_filtered += 1
            return None
        counts.num_kept += 1
        return Sample(key, caption, meta, _read(tar, group[image_ext]), path)


def _open_tar(path: str) -> tarfile.TarFile:
    # Seekable mode ("r:", any compression): iterating then reads headers and seeks past the data.
    try:
        return tarfile.open(path, mode="r:*")
    except (OSError, tarfile.TarError) as exc:
        raise DataError(f"shard {path}: cannot open as a tar file ({exc})") from None


def _read(tar: tarfile.TarFile, info: tarfile.TarInfo) -> bytes:
    with tar.extractfile(info) as handle:
        return handle.read()


def _text(tar: tarfile.TarFile, path: str, info: tarfile.TarInfo) -> str:
    try:
        return _read(tar, info).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"shard {path}: member {info.name} is not UTF-8 text ({exc})") from None


def _json(tar: tarfile.TarFile, path: str, info: tarfile.TarInfo) -> dict:
    try:
        meta = json.loads(_text(tar, path, info))
    except json.JSONDecodeError as exc:
        raise DataError(f"shard {path}: member {info.name} is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise DataError(f"shard {path}: member {info.name} must hold a JSON object")
    return meta
