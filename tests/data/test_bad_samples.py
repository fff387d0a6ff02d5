"""`data.on_bad_sample`: a corrupt, truncated, empty or unreadable image either stops the run with a
DataError naming the file, or is skipped, counted and named, with the batches still full and the
same in every process (a fresh stream, another rank, a data-loader worker)."""
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import TypeAdapter, ValidationError

import flowspec
from flowspec.runtime.data.loader import PrefetchingStream
from flowspec.runtime.data.sources import DataError
from flowspec.runtime.data.stream import BatchStream
from flowspec.schemas.data import Data

DATA = TypeAdapter(Data)
SIZES = [(20, 40), (32, 32), (40, 20)]  # one per bucket of resolution 24, ratios 0.5, 1, 2
HINT = "; `data.on_bad_sample: skip` would skip it (counted and named in the data report)"


# ------------------------------------------------------------------------------------ helpers
def png_bytes(height: int, width: int, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def pillow_says(data: bytes) -> str:
    """Pillow's own words for bytes it cannot open or decode (they differ between its versions)."""
    try:
        Image.open(io.BytesIO(data)).convert("RGB")
    except OSError as exc:
        return str(exc)
    raise AssertionError("these bytes are a valid image")


# Bad files, each made from real bytes: noise named .jpg, a PNG cut inside its header, an empty file;
# CUT is a PNG cut halfway through its pixel data (header intact: found only when decoded).
SHORT, CUT = png_bytes(32, 32, 8)[:20], png_bytes(32, 32, 9)[:900]
UNKNOWN = "cannot read the image: unknown format or corrupt header"
TRUNCATED = f"cannot decode the image: truncated or corrupt pixel data ({pillow_says(CUT)})"
BAD = {
    "noise.jpg": (np.random.default_rng(7).bytes(600), UNKNOWN),
    "short.png": (SHORT, f"cannot read the image ({pillow_says(SHORT)})"),
    "empty.png": (b"", "cannot read the image: the file is empty (0 bytes)"),
}


def photo_folder(root: Path, count: int = 12, extra: dict[str, bytes] | None = None) -> Path:
    """`count` good PNGs cycling through SIZES plus `extra` files, each with a sidecar caption."""
    root.mkdir(parents=True, exist_ok=True)
    files = {f"img{i:02d}.png": png_bytes(*SIZES[i % 3], seed=i) for i in range(count)}
    for name, data in {**files, **(extra or {})}.items():
        (root / name).write_bytes(data)
        (root / name).with_suffix(".txt").write_text(f"photo {name}")
    return root


def folder_data(root: Path, on_bad_sample: str = "fail") -> Data:
    return DATA.validate_python({
        "source": {"kind": "imagefolder", "path": str(root)},
        "curriculum": [{"resolution": 24, "aspect_ratios": [0.5, 1.0, 2.0], "complexity": [1, 5]}],
        "on_bad_sample": on_bad_sample})


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def epoch_steps(stream: BatchStream) -> int:
    return stream.phase(0).schedules[0].batches_per_epoch


def appearances(stream: BatchStream, key: str, steps: int) -> int:
    """How often the plan puts the folder's image `key` in the first `steps` batches."""
    phase = stream.phase(0)
    view = phase.views[0]
    return sum(view.source.record(view.kept[item]).key == key for s in range(steps) for item in phase.batch(s)[2])


# ---------------------------------------------------------------------------------- the key
def test_the_key_defaults_to_fail_and_takes_only_fail_or_skip():
    block = {"source": {"kind": "shapes"}}
    assert DATA.validate_python(block).on_bad_sample == "fail"
    with pytest.raises(ValidationError, match="on_bad_sample"):
        DATA.validate_python({**block, "on_bad_sample": "ignore"})


# ------------------------------------------------------------------------- bad headers: found up front
@pytest.mark.parametrize("name", sorted(BAD))
def test_fail_stops_at_a_bad_header_naming_the_file_the_reason_and_the_key(tmp_path, name):
    data, reason = BAD[name]
    root = photo_folder(tmp_path / "photos", extra={name: data})
    stream = BatchStream(folder_data(root), 0, 2, 1, 8)
    with pytest.raises(DataError) as info:
        stream.report()  # what `flowspec plan` builds: the file is found before any training
    assert str(info.value) == f"{root / name}: {reason}{HINT}"
    with pytest.raises(DataError, match=name):
        BatchStream(folder_data(root), 0, 2, 1, 8).batch(0, 0)


def test_skip_leaves_bad_headers_out_before_bucketing_and_names_each_one(tmp_path):
    root = photo_folder(tmp_path / "photos", extra={name: data for name, (data, _) in BAD.items()})
    stream = BatchStream(folder_data(root, "skip"), 0, 2, 1, 8)
    part = stream.report()[0]["components"][0]
    assert part["found"] == 15 and part["kept"] == 12 and part["skipped"] == 3
    assert part["found"] == part["filtered"] + part["outside_complexity"] + part["kept"] + part["skipped"]
    assert part["skipped_files"] == [{"file": str(root / name), "reason": BAD[name][1]} for name in sorted(BAD)]
    assert sum(bucket["images"] for bucket in part["per_bucket"]) == 12
    good = {sha((root / f"img{i:02d}.png").read_bytes()) for i in range(12)}
    for step in range(2 * epoch_steps(stream)):
        batch = stream.batch(step, 0)
        assert batch.x.shape[0] == 2 and batch.skipped == []
        assert {key.split(":")[1] for key in batch.keys} <= good


def test_a_directory_named_like_an_image_is_never_read_as_one(tmp_path):
    root = photo_folder(tmp_path / "photos", count=3)
    (root / "x.jpg").mkdir()
    (root / "x.jpg" / "inside.png").write_bytes(png_bytes(8, 8, 1))
    (root / "x.jpg" / "inside.txt").write_text("inside a folder named x.jpg")
    stream = BatchStream(folder_data(root), 0, 2, 1, 8)
    assert [stream.sources["imagefolder"].record(i).key for i in range(4)] == [
        "img00.png", "img01.png", "img02.png", "x.jpg/inside.png"]
    rows = [{"file_name": name, "text": "t"} for name in ("img00.png", "x.jpg")]
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    with pytest.raises(DataError, match=r"metadata.jsonl:2: file_name x.jpg is a folder, not an image file"):
        BatchStream(folder_data(root), 0, 2, 1, 8)


UNREADABLE = """
import ctypes, json, sys
# Root reads any file whatever its mode (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH): drop both from this
# process's effective capabilities (capset(2); a no-op for other users) so a mode-000 file is unreadable.
class Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
class Caps(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]
libc, header, caps = ctypes.CDLL(None, use_errno=True), Header(0x20080522, 0), (Caps * 2)()
assert libc.capget(ctypes.byref(header), caps) == 0
caps[0].effective &= ~0b110
assert libc.capset(ctypes.byref(header), caps) == 0

from pydantic import TypeAdapter
from flowspec.runtime.data.sources import DataError
from flowspec.runtime.data.stream import BatchStream
from flowspec.schemas.data import Data
block = {"source": {"kind": "imagefolder", "path": sys.argv[1]},
         "curriculum": [{"resolution": 24, "aspect_ratios": [0.5, 1.0, 2.0]}]}
try:
    BatchStream(TypeAdapter(Data).validate_python(block), 0, 2, 1, 8).report()
except DataError as exc:
    print(json.dumps({"fail": str(exc)}))
skip = BatchStream(TypeAdapter(Data).validate_python({**block, "on_bad_sample": "skip"}), 0, 2, 1, 8)
print(json.dumps({"skip": skip.report()[0]["components"][0]["skipped_files"]}))
"""


def test_a_file_without_read_permission_is_a_bad_sample(tmp_path):
    root = photo_folder(tmp_path / "photos", count=4, extra={"locked.png": png_bytes(32, 32, 3)})
    (root / "locked.png").chmod(0)
    env = {**os.environ, "PYTHONPATH": str(Path(flowspec.__file__).parent.parent)}
    run = subprocess.run([sys.executable, "-c", UNREADABLE, str(root)], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    fail, skip = (json.loads(line) for line in run.stdout.splitlines())
    reason = "cannot read the image: permission denied"
    assert fail == {"fail": f"{root / 'locked.png'}: {reason}{HINT}"}
    assert skip == {"skip": [{"file": str(root / "locked.png"), "reason": reason}]}


# ------------------------------------------------------------------- bad pixels: found when loaded
def test_fail_stops_at_pixels_that_do_not_decode_also_from_a_loader_worker(tmp_path):
    root = photo_folder(tmp_path / "photos", extra={"cut.png": CUT})
    expected = f"{root / 'cut.png'}: {TRUNCATED}{HINT}"
    stream = BatchStream(folder_data(root), 0, 2, 1, 8)
    assert stream.report()[0]["components"][0]["skipped"] == 0  # its header is fine
    step = next(s for s in range(epoch_steps(stream)) if appearances(stream, "cut.png", s + 1))
    with pytest.raises(DataError) as info:
        stream.batch(step, 0)
    assert str(info.value) == expected
    served = PrefetchingStream(BatchStream(folder_data(root), 0, 2, 1, 8), accumulation=1, steps=step + 1,
                               num_workers=2, prefetch_factor=1)
    with pytest.raises(DataError) as info:
        for s in range(step + 1):
            served.batch(s, 0)
    assert str(info.value) == expected  # one line, not a worker's wrapped traceback


def test_skip_replaces_undecodable_pixels_with_an_image_of_the_same_bucket_in_every_stream(tmp_path):
    root = photo_folder(tmp_path / "photos", extra={"cut.png": CUT})
    data = folder_data(root, "skip")
    first = BatchStream(data, 4, 2, 1, 8)
    steps = 2 * epoch_steps(first)
    batches = [first.batch(s, 0) for s in range(steps)]
    entry = {"component": "imagefolder", "file": str(root / "cut.png"), "reason": TRUNCATED}
    assert sum(len(b.skipped) for b in batches) == appearances(first, "cut.png", steps) > 0
    assert all(b.skipped == [entry] * len(b.skipped) for b in batches)
    good = {sha((root / f"img{i:02d}.png").read_bytes()) for i in range(12)}
    assert all(b.x.shape[0] == 2 and {k.split(":")[1] for k in b.keys} <= good for b in batches)
    assert first.report()[0]["components"][0]["skipped_files"] == [{"file": entry["file"], "reason": TRUNCATED}]

    resumed = BatchStream(data, 4, 2, 1, 8)  # a new process knows nothing of earlier failures
    for step in reversed(range(steps)):
        again = resumed.batch(step, 0)
        assert again.keys == batches[step].keys and torch.equal(again.x, batches[step].x)

    ranks = [BatchStream(data, 4, 1, 1, 8, rank=r, world=2) for r in range(2)]
    for step in range(steps):
        assert torch.equal(torch.cat([r.batch(step, 0).x for r in ranks]), batches[step].x)

    served = PrefetchingStream(BatchStream(data, 4, 2, 1, 8), accumulation=1, steps=steps, num_workers=2,
                               prefetch_factor=2)
    for step in range(steps):
        assert served.batch(step, 0).keys == batches[step].keys
    # The workers loaded every image; their finds reached this process's report through the batches.
    assert served.report()[0]["components"][0]["skipped"] == 1


# ---------------------------------------------------------------------------------- webdataset
def write_shards(folder: Path, bad: dict[str, bytes]) -> str:
    """Two shards of six good samples each; the `bad` samples go at the end of the first."""
    for s in range(2):
        members = [(f"s{s}_{i}", png_bytes(*SIZES[i % 3], seed=10 * s + i)) for i in range(6)]
        members += list(bad.items()) if s == 0 else []
        with tarfile.open(folder / f"shard-{s}.tar", "w") as tar:
            for key, image in members:
                for ext, payload in (("png", image), ("txt", f"sample {key}".encode())):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    return f"{folder}/shard-{{0..1}}.tar"


def shard_data(urls: str, on_bad_sample: str) -> Data:
    return DATA.validate_python({
        "source": {"kind": "webdataset", "urls": urls},
        "curriculum": [{"resolution": 24, "aspect_ratios": [0.5, 1.0, 2.0], "complexity": [1, 5]}],
        "on_bad_sample": on_bad_sample})


@pytest.mark.parametrize("key,data,reason", [("noise", BAD["noise.jpg"][0], UNKNOWN), ("cut", CUT, TRUNCATED)])
def test_webdataset_fail_names_shard_and_key(tmp_path, key, data, reason):
    stream = BatchStream(shard_data(write_shards(tmp_path, {key: data}), "fail"), 0, 2, 1, 8)
    with pytest.raises(DataError) as info:
        for step in range(20):
            stream.batch(step, 0)
    assert str(info.value) == f"{tmp_path}/shard-0.tar:{key}: {reason}{HINT}"


def test_webdataset_skip_counts_names_and_resumes_exactly(tmp_path):
    urls = write_shards(tmp_path, {"noise": BAD["noise.jpg"][0], "cut": CUT})
    data = shard_data(urls, "skip")
    first = BatchStream(data, 1, 2, 1, 8)
    batches = [first.batch(step, 0) for step in range(16)]  # two epochs of the 13 decodable samples
    shard = f"{tmp_path}/shard-0.tar"
    named = {entry["file"]: entry["reason"] for b in batches for entry in b.skipped}
    assert named == {f"{shard}:noise": UNKNOWN, f"{shard}:cut": TRUNCATED}
    found = [entry["file"] for b in batches for entry in b.skipped]
    assert found.count(f"{shard}:noise") == 1  # left out once, when bucketed: never in a batch
    assert found.count(f"{shard}:cut") >= 2  # replaced each time it is in a batch (once an epoch, or more)
    bad = {sha(CUT), sha(BAD["noise.jpg"][0])}
    assert all(b.x.shape[0] == 2 and not {k.split(":")[1] for k in b.keys} & bad for b in batches)
    report = first.report()[0]
    assert report["skipped"] == 2 and {f["file"] for f in report["skipped_files"]} == set(named)
    resumed = BatchStream(data, 1, 2, 1, 8)
    for step in (15, 9, 2):
        again = resumed.batch(step, 0)
        assert again.keys == batches[step].keys and torch.equal(again.x, batches[step].x)
    served = PrefetchingStream(BatchStream(data, 1, 2, 1, 8), accumulation=1, steps=16, num_workers=2,
                               prefetch_factor=2)
    assert [served.batch(step, 0).keys for step in range(16)] == [b.keys for b in batches]
    assert served.report()[0]["skipped"] == 2
