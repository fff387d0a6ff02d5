"""Image folders (sidecar / metadata.jsonl captions, header-only sizes, errors, hashes) and filters."""
import json
from pathlib import Path

import pytest
from PIL import Image, ImageFile, ImageOps

from flowspec.runtime.data import filters as filt
from flowspec.runtime.data.sources import DataError, ImageFolder, Record
from flowspec.schemas.data import Filter
from flowspec.schemas.data import ImageFolder as ImageFolderBlock


# ------------------------------------------------------------------------------------ helpers
def write_image(path: Path, width: int = 6, height: int = 4, color=(200, 30, 30), exif_orientation=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", (width, height), color)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".bmp": "BMP"}[path.suffix.lower()]
    kwargs = {}
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        kwargs["exif"] = exif.tobytes()
    image.save(path, format=fmt, **kwargs)
    return path


def sidecar_folder(root: Path, items: dict[str, str]) -> Path:
    """items: relative image path -> caption (written to NAME.txt with padding to strip)."""
    for rel, caption in items.items():
        write_image(root / rel)
        (root / rel).with_suffix(".txt").write_text(f"  {caption}\n", encoding="utf-8")
    return root


def metadata_folder(root: Path, rows: list[dict], lines: list[str] | None = None) -> Path:
    for row in rows:
        write_image(root / row["file_name"])
    text = "\n".join([json.dumps(r) for r in rows] + (lines or [])) + "\n"
    (root / "metadata.jsonl").write_text(text, encoding="utf-8")
    return root


def folder(root: Path, captions: str = "auto", filters=()) -> ImageFolder:
    return ImageFolder(ImageFolderBlock(path=str(root), captions=captions, filters=list(filters)))


# ------------------------------------------------------------------------------- caption modes
def test_sidecar_captions_recursive_sorted_and_stripped(tmp_path):
    items = {"z.png": "last", "a/b.JPG": "upper-case extension", "a/a.webp": "first in a", "m.bmp": "bitmap"}
    sidecar_folder(tmp_path, items)
    write_image(tmp_path / ".hidden" / "x.png")  # hidden folders are never data
    (tmp_path / "notes.md").write_text("not an image")
    source = folder(tmp_path)
    assert source.captions_from == "sidecar"
    assert [source.record(i).key for i in range(len(source))] == ["a/a.webp", "a/b.JPG", "m.bmp", "z.png"]
    assert source.record(1) == Record("a/b.JPG", "upper-case extension", {})
    assert source.image(0).mode == "RGB" and source.image(0).size == (6, 4)


def test_metadata_captions_carry_other_keys_as_meta(tmp_path):
    rows = [{"file_name": "img/2.png", "text": " two ", "score": 6.5},
            {"file_name": "img/1.jpg", "text": "one", "score": 3, "source": "web"}]
    metadata_folder(tmp_path, rows)
    for captions in ("metadata", "auto"):
        source = folder(tmp_path, captions)
        assert source.captions_from == "metadata"
        assert [source.record(i) for i in range(2)] == [
            Record("img/1.jpg", "one", {"score": 3, "source": "web"}), Record("img/2.png", "two", {"score": 6.5})]


def test_auto_prefers_metadata_and_sidecar_mode_ignores_it(tmp_path):
    metadata_folder(tmp_path, [{"file_name": "a.png", "text": "from metadata"}])
    (tmp_path / "a.txt").write_text("from sidecar")
    assert folder(tmp_path, "auto").record(0).caption == "from metadata"
    assert folder(tmp_path, "sidecar").record(0).caption == "from sidecar"


def test_order_is_stable_whatever_the_creation_order(tmp_path):
    names = [f"d{i % 3}/img{i:02d}.png" for i in range(12)]
    sidecar_folder(tmp_path / "one", {n: n for n in names})
    sidecar_folder(tmp_path / "two", {n: n for n in reversed(names)})
    keys = [[s.record(i).key for i in range(len(s))] for s in (folder(tmp_path / "one"), folder(tmp_path / "two"))]
    assert keys[0] == keys[1] == sorted(names)


# ------------------------------------------------------------------------------ header-only reads
def test_size_reads_only_the_header(tmp_path, monkeypatch):
    sidecar_folder(tmp_path, {"wide.png": "w", "tall.jpg": "t"})
    write_image(tmp_path / "wide.png", width=40, height=10)
    write_image(tmp_path / "tall.jpg", width=10, height=30)
    data = (tmp_path / "wide.png").read_bytes()
    (tmp_path / "wide.png").write_bytes(data[:data.index(b"IDAT") + 6])  # header intact, pixel data gone
    source = folder(tmp_path)

    def no_decoding(self, *args, **kwargs):
        raise AssertionError("size() decoded pixels")
    monkeypatch.setattr(Image.Image, "load", no_decoding)
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    assert source.size(0) == (30, 10) and source.size(1) == (10, 40)  # (height, width)
    monkeypatch.undo()
    with pytest.raises(DataError, match="wide.png"):
        source.image(1)


def test_size_follows_exif_rotation_like_the_decoded_image(tmp_path):
    sidecar_folder(tmp_path, {"r.jpg": "rotated"})
    write_image(tmp_path / "r.jpg", width=16, height=8, exif_orientation=6)
    source = folder(tmp_path)
    assert source.size(0) == (16, 8)
    assert source.image(0).size == (8, 16)  # PIL size is (width, height)


def test_content_hash_changes_exactly_when_the_bytes_do(tmp_path):
    sidecar_folder(tmp_path, {"a.png": "a", "b.png": "b"})
    write_image(tmp_path / "b.png", color=(0, 0, 255))
    source = folder(tmp_path)
    first = [source.content_hash(i) for i in range(2)]
    assert first[0] != first[1] and len(first[0]) == 64
    (tmp_path / "a.txt").write_text("new caption")  # captions are not image bytes
    assert [folder(tmp_path).content_hash(i) for i in range(2)] == first
    write_image(tmp_path / "a.png", color=(0, 255, 0))
    assert source.content_hash(0) != first[0]  # even in the same object: the cache follows the file
    assert folder(tmp_path).content_hash(0) == source.content_hash(0)
    assert source.content_hash(1) == first[1]


# ------------------------------------------------------------------------------------- errors
def _no_images(root):
    root.mkdir()
    (root / "readme.txt").write_text("x")


def _uncaptioned(root):
    sidecar_folder(root, {"ok.png": "fine"})
    for i in range(7):
        write_image(root / f"bare{i}.png")


def _metadata_line(line):
    return lambda root: metadata_folder(root, [{"file_name": "a.png", "text": "a"}], [line])


ERRORS = {
    "missing folder": (lambda root: None, "auto", r"does not exist"),
    "no images": (_no_images, "auto", r"holds no images"),
    "no caption": (_uncaptioned, "sidecar",
                   r"7 image\(s\) .* no caption file.*bare0.png.*bare4.png, \.\.\. \(2 more\)"),
    "not json": (_metadata_line("{oops"), "metadata", r"metadata.jsonl:2: not valid JSON"),
    "not an object": (_metadata_line("[1, 2]"), "metadata", r"metadata.jsonl:2: expected a JSON object"),
    "no file_name": (_metadata_line('{"text": "t"}'), "metadata", r"metadata.jsonl:2: missing file_name"),
    "no text": (_metadata_line('{"file_name": "a.png"}'), "metadata", r"metadata.jsonl:2: missing text"),
    "absent file": (_metadata_line('{"file_name": "gone.png", "text": "t"}'), "auto",
                    r"metadata.jsonl:2: file_name gone.png does not exist"),
    "duplicate": (_metadata_line('{"file_name": "a.png", "text": "t"}'), "auto", r"metadata.jsonl:2: a.png .* line 1"),
    "no metadata file": (lambda root: sidecar_folder(root, {"a.png": "a"}), "metadata",
                         r"metadata.jsonl does not exist"),
}


@pytest.mark.parametrize("case", ERRORS)
def test_errors_name_the_file(tmp_path, case):
    build, captions, message = ERRORS[case]
    root = tmp_path / "data"
    build(root)
    with pytest.raises(DataError, match=message) as info:
        folder(root, captions)
    assert str(root) in str(info.value)


def test_image_missing_from_metadata_is_an_error(tmp_path):
    metadata_folder(tmp_path, [{"file_name": "a.png", "text": "a"}])
    write_image(tmp_path / "extra.png")
    with pytest.raises(DataError, match=r"1 image\(s\) .* no line in .*metadata.jsonl: extra.png"):
        folder(tmp_path)


def test_bad_regex_fails_at_construction(tmp_path):
    sidecar_folder(tmp_path, {"a.png": "a"})
    with pytest.raises(ValueError, match=r"'\(' is not a valid regular expression"):
        folder(tmp_path, filters=[Filter(regex="(")])


# --------------------------------------------------------------------------- filters on a folder
def test_folder_filters_on_caption_and_score_with_counts(tmp_path):
    rows = [{"file_name": f"{i}.png", "text": text, **({"score": score} if score is not None else {})}
            for i, (text, score) in enumerate([("A Dog runs", 7.0), ("a cat", 8.0), ("dog and cat", 4.0),
                                               ("hot dog", None), ("dog", 9.5), ("doge", 6.0)])]
    metadata_folder(tmp_path, rows)
    source = folder(tmp_path, filters=[Filter(contains="DOG"), Filter(regex=r"\b[Dd]og\b", contains="dog"),
                                       Filter(field="score", min=5, max=9)])
    assert [source.record(i).key for i in range(len(source))] == ["0.png"]
    summary = source.summary()
    assert summary["num_found"] == 6 and summary["num_kept"] == 1 and summary["num_filtered"] == 5
    assert summary["missing_field"] == {"score": 1}
    assert "caption contains 'DOG'" in summary["filters"] and "score >= 5 and <= 9" in summary["filters"]


# ------------------------------------------------------------------------------------ filters
CAPTION = "A small Red circle"


@pytest.mark.parametrize("f, expected", [
    (Filter(contains="red"), True),
    (Filter(contains="RED CIRCLE"), True),
    (Filter(contains="square"), False),
    (Filter(regex=r"^A small"), True),
    (Filter(regex=r"red"), False),  # regex is case-sensitive; contains is not
    (Filter(regex=r"circle$"), True),
    (Filter(equals=CAPTION), True),
    (Filter(equals="a small red circle"), False),
    (Filter(), True),  # no condition: only presence, and the caption is always present
    (Filter(contains="small", regex="circle", equals=CAPTION), True),
    (Filter(contains="small", regex="square"), False),  # every condition must hold
])
def test_caption_conditions(f, expected):
    assert filt.passes([f], CAPTION, {}) is expected


@pytest.mark.parametrize("f, value, expected", [
    (Filter(field="score", min=5), 5, True),
    (Filter(field="score", min=5), 4.99, False),
    (Filter(field="score", max=5), 5.0, True),
    (Filter(field="score", max=5), 5.01, False),
    (Filter(field="score", min=2, max=3), 2.5, True),
    (Filter(field="score", min=2, max=3), 3.5, False),
    (Filter(field="score", min=2), "2.5", True),  # numeric strings count as numbers
    (Filter(field="score", min=2), "high", False),  # non-numeric: does not pass
    (Filter(field="score", max=2), "nan", False),
    (Filter(field="score", min=0), True, False),  # a bool is not a score
    (Filter(field="score", min=0), [1], False),
    (Filter(field="score", equals=5), 5.0, True),
    (Filter(field="score", equals=5), "5", True),
    (Filter(field="tag", equals="true"), True, True),
    (Filter(field="tag", equals="art"), "Art", False),
    (Filter(field="tag", contains="ART"), "pop-art", True),
    (Filter(field="tag", regex=r"^\d+$"), 123, True),
])
def test_metadata_conditions(f, value, expected):
    assert filt.passes([f], "caption", {f.field: value}) is expected


def test_missing_field_does_not_pass_and_is_counted():
    filters = [Filter(field="score", min=0), Filter(field="tag")]
    assert not filt.passes(filters, "c", {"tag": "x"})
    assert not filt.passes(filters, "c", {"score": None, "tag": "x"})  # JSON null is missing
    assert filt.passes(filters, "c", {"score": 1, "tag": "x"})
    assert filt.missing_fields(filters, "c", {}) == ["score", "tag"]
    samples = [("c", {}), ("c", {"score": 1}), ("c", {"tag": "t"}), ("c", {"score": 2, "tag": "t"})]
    assert filt.count_missing(filters, samples) == {"score": 2, "tag": 2}


def test_all_filters_must_pass():
    filters = [Filter(contains="dog"), Filter(field="score", min=5)]
    assert filt.passes(filters, "a dog", {"score": 6})
    assert not filt.passes(filters, "a cat", {"score": 6})
    assert not filt.passes(filters, "a dog", {"score": 4})
    assert filt.passes([], "anything", {})


def test_explain_is_one_line():
    assert filt.explain([]) == "keep every sample (no filters)"
    text = filt.explain([Filter(contains="dog", regex="a|b"), Filter(field="score", min=4.5, max=9), Filter(field="x")])
    assert "\n" not in text
    assert text == ("keep samples where caption contains 'dog' (any case) and matches /a|b/; "
                    "score >= 4.5 and <= 9; x is present")


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pillow_and_size(tmp_path, orientation):
    sidecar_folder(tmp_path, {"q.png": "quadrants"})
    image = Image.new("RGB", (6, 4))
    image.putdata([(40 * x, 60 * y, 90) for y in range(4) for x in range(6)])  # no symmetry
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.save(tmp_path / "q.png", exif=exif.tobytes())
    source = folder(tmp_path)
    expected = ImageOps.exif_transpose(Image.open(tmp_path / "q.png")).convert("RGB")
    assert source.image(0).tobytes() == expected.tobytes()
    assert source.size(0) == (expected.height, expected.width)
