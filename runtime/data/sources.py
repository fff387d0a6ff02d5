"""Index-addressable image sources: a local folder of captioned images.

Everything the planner needs (how many images, their sizes for aspect buckets, a content hash for
cache keys) comes without decoding pixels: sizes are read from the image header, and filters run
on captions and metadata at construction, so `len()` is the number of images actually trained on.
Every problem with the folder is reported up front, naming the file, instead of at step 10,000.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from . import filters as filt

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
METADATA = "metadata.jsonl"
_SHOWN = 5  # offending files listed in an error; the count covers the rest
# EXIF orientation -> the transpose that displays the image upright (TIFF/EXIF tag 0x0112).
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}
_TRANSPOSED = {5, 6, 7, 8}  # these swap width and height


class DataError(ValueError):
    """A problem with the user's data (not a bug): the message names the file."""


class BadSample(DataError):
    """One image that cannot be read or decoded: `data.on_bad_sample: skip` leaves it out instead."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"{name}: {reason}; `data.on_bad_sample: skip` would skip it "
                         "(counted and named in the data report)")
        self.name, self.reason = name, reason

    def __reduce__(self):  # rebuilt from (name, reason) when it crosses a process boundary
        return type(self), (self.name, self.reason)


@dataclass(frozen=True)
class Record:
    key: str  # stable identity: the path relative to the folder, with '/' separators
    caption: str
    meta: dict


def _orientation(image: Image.Image) -> int:
    # From the EXIF block parsed at open time only: Image.getexif() decodes a PNG's pixels to find a
    # trailing eXIf chunk. Size and decode both use this, so bucket sizes always match the pixels.
    raw = image.info.get("exif")
    if not raw:
        return 1
    exif = Image.Exif()
    try:
        exif.load(raw)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not make an otherwise good image unreadable
        return 1
    return exif.get(0x0112, 1)


def oriented_size(image: Image.Image) -> tuple[int, int]:
    """(height, width) as displayed, from an opened-but-not-decoded image."""
    width, height = image.size
    return (width, height) if _orientation(image) in _TRANSPOSED else (height, width)


def to_rgb(image: Image.Image) -> Image.Image:
    """Decode as displayed (EXIF rotation applied, as `oriented_size` assumes) in RGB."""
    method = _UPRIGHT.get(_orientation(image))
    rgb = image.convert("RGB")
    return rgb.transpose(method) if method is not None else rgb


def _unreadable(exc: Exception) -> str:
    # PIL's own message for an unknown format repeats the path or a BytesIO address: say it plainly.
    if isinstance(exc, IsADirectoryError):
        return "cannot read the image: it is a directory"
    if isinstance(exc, PermissionError):
        return "cannot read the image: permission denied"
    if isinstance(exc, UnidentifiedImageError):
        return "cannot read the image: unknown format or corrupt header"
    return f"cannot read the image ({exc})"


def open_image(source, name: str) -> Image.Image:
    """Image.open (the header only) that raises BadSample naming the file and the reason."""
    try:
        if (len(source) if isinstance(source, bytes) else os.stat(source).st_size) == 0:
            raise BadSample(name, "cannot read the image: the file is empty (0 bytes)")
        return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except (OSError, Image.DecompressionBombError) as exc:
        raise BadSample(name, _unreadable(exc)) from None


def header_size(source, name: str) -> tuple[int, int]:
    """(height, width) as displayed, from the header only; BadSample when there is no usable header."""
    with open_image(source, name) as image:
        height, width = oriented_size(image)
    if height <= 0 or width <= 0:
        raise BadSample(name, f"cannot read the image: the header gives an empty {height}x{width} image")
    return height, width


# What PIL raises for pixel data that ends early or does not decode, after a valid header
# (ValueError: e.g. "tile cannot extend outside image" from a corrupt tile table).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error)


def decode_rgb(image: Image.Image, name: str) -> Image.Image:
    """`to_rgb` that raises BadSample naming the file when the pixels cannot be decoded."""
    try:
        return to_rgb(image)
    except _DECODE_ERRORS as exc:
        raise BadSample(name, f"cannot decode the image: truncated or corrupt pixel data ({exc})") from None


def _list_images(root: Path) -> list[str]:
    # Hidden entries (.ipynb_checkpoints, macOS ._name.jpg resource forks) are never training data.
    found = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
            found.append(rel.as_posix())
    return sorted(found)


def _sidecar_captions(root: Path, images: list[str]) -> dict[str, str]:
    captions, missing = {}, []
    for rel in images:
        txt = (root / rel).with_suffix(".txt")
        if not txt.is_file():
            missing.append(rel)
            continue
        try:
            captions[rel] = txt.read_text(encoding="utf-8").strip()
        except UnicodeDecodeError as exc:
            raise DataError(f"{txt}: caption is not UTF-8 text ({exc})") from None
        except OSError as exc:
            raise DataError(f"{txt}: cannot read the caption file ({exc.strerror or exc})") from None
    if missing:
        raise DataError(f"{len(missing)} image(s) in {root} have no caption file (NAME.txt beside the image): "
                        f"{listing(missing)}")
    return captions


def listing(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f", ... ({len(names) - _SHOWN} more)" if len(names) > _SHOWN else "")


def _parse_line(where: str, line: str) -> tuple[str, str, dict]:
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: not valid JSON ({exc.msg})") from None
    if not isinstance(entry, dict):
        raise DataError(f"{where}: expected a JSON object with file_name and text")
    absent = [k for k in ("file_name", "text") if k not in entry]
    if absent:
        raise DataError(f"{where}: missing {' and '.join(absent)}")
    name, text = entry.pop("file_name"), entry.pop("text")
    if not isinstance(name, str) or not isinstance(text, str):
        raise DataError(f"{where}: file_name and text must be strings")
    return Path(name).as_posix().removeprefix("./"), text.strip(), entry


def _why_not_listed(path: Path) -> str:
    if not path.exists():
        return "does not exist"
    if path.is_dir():
        return "is a folder, not an image file"
    return f"is not an image ({', '.join(IMAGE_EXTENSIONS)}) or is hidden"


def _metadata_captions(root: Path, images: list[str]) -> tuple[dict[str, str], dict[str, dict]]:
    path, known = root / METADATA, set(images)
    captions: dict[str, str] = {}
    metas: dict[str, dict] = {}
    first_line: dict[str, int] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        name, text, meta = _parse_line(where, line)
        if name in first_line:
            raise DataError(f"{where}: {name} is already captioned on line {first_line[name]}")
        if name not in known:
            raise DataError(f"{where}: file_name {name} {_why_not_listed(root / name)} in {root}")
        first_line[name], captions[name], metas[name] = number, text, meta
    missing = [rel for rel in images if rel not in captions]
    if missing:
        raise DataError(f"{len(missing)} image(s) in {root} have no line in {path}: {listing(missing)}")
    return captions, metas


class ImageFolder:
    """A folder of images (recursively) with sidecar captions or a metadata.jsonl; see schemas/data.py."""

    kind = "imagefolder"

    def __init__(self, block):
        self.root = Path(block.path).expanduser()
        if not self.root.is_dir():
            raise DataError(f"image folder {self.root} does not exist or is not a folder")
        images = _list_images(self.root)
        if not images:
            raise DataError(f"image folder {self.root} holds no images ({', '.join(IMAGE_EXTENSIONS)}, any case)")
        has_metadata = (self.root / METADATA).is_file()
        self.captions_from = block.captions if block.captions != "auto" else (
            "metadata" if has_metadata else "sidecar")
        if self.captions_from == "metadata":
            if not has_metadata:
                raise DataError(f"captions: metadata but {self.root / METADATA} does not exist")
            captions, metas = _metadata_captions(self.root, images)
        elif self.captions_from == "sidecar":
            captions, metas = _sidecar_captions(self.root, images), {}
        else:
            captions, metas = dict.fromkeys(images, ""), {}
        self.filters = list(block.filters)
        filt.validate(self.filters)
        everything = [Record(rel, captions[rel], metas.get(rel, {})) for rel in images]
        filtered_on = [(r.caption, filt.with_file(r.meta, r.key)) for r in everything]
        self.records = [r for r, (caption, meta) in zip(everything, filtered_on) if filt.passes(self.filters, caption, meta)]
        self.by_filter = filt.by_filter(self.filters, filtered_on)
        self.num_found = len(everything)
        # Classes (for class-conditional models) are the top-level subfolders of every image found, filtered
        # or not, so a filter never renumbers them.
        self.classes = tuple(sorted({r.key.split("/", 1)[0] for r in everything if "/" in r.key}))
        self.unfiled = [r.key for r in everything if "/" not in r.key]
        self.missing = filt.count_missing(self.filters, filtered_on)
        self._sizes: dict[int, tuple[int, int] | BadSample] = {}
        self._hashes: dict[tuple[int, int, int], str] = {}

    def __len__(self) -> int:
        return len(self.records)

    def record(self, i: int) -> Record:
        return self.records[i]

    def label(self, i: int) -> int:
        """Index of image i's class (its top-level subfolder) in `classes`; 0 for an image outside any."""
        key = self.records[i].key
        return self.classes.index(key.split("/", 1)[0]) if "/" in key else 0

    def path(self, i: int) -> Path:
        return self.root / self.records[i].key

    def size(self, i: int) -> tuple[int, int]:
        """(height, width) from the header only: bucketing a large folder must not decode it.
        BadSample when the header cannot be read (remembered: each phase asks again)."""
        if i not in self._sizes:
            try:
                self._sizes[i] = header_size(self.path(i), str(self.path(i)))
            except BadSample as exc:
                self._sizes[i] = exc
        size = self._sizes[i]
        if isinstance(size, BadSample):
            raise BadSample(size.name, size.reason)
        return size

    def image(self, i: int) -> Image.Image:
        """The decoded RGB image; BadSample when it cannot be read or decoded."""
        path = self.path(i)
        with open_image(path, str(path)) as image:
            return decode_rgb(image, str(path))

    def content_hash(self, i: int) -> str:
        """sha256 of the file bytes: a cache key that changes exactly when the image does."""
        path = self.path(i)
        try:
            stat = path.stat()
            # Keyed by mtime and size too, so an image edited while this object lives is rehashed.
            key = (i, stat.st_mtime_ns, stat.st_size)
            if key not in self._hashes:
                digest = hashlib.sha256()
                with open(path, "rb") as handle:
                    for chunk in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(chunk)
                self._hashes[key] = digest.hexdigest()
        except OSError as exc:  # deleted or made unreadable since it was decoded
            raise BadSample(str(path), _unreadable(exc)) from None
        return self._hashes[key]

    def summary(self) -> dict:
        return {
            "path": str(self.root),
            "captions": self.captions_from,
            "num_found": self.num_found,
            "num_kept": len(self.records),
            "num_filtered": self.num_found - len(self.records),
            "missing_field": dict(self.missing),
            "filters": filt.explain(self.filters),
            "by_filter": self.by_filter,
        }
