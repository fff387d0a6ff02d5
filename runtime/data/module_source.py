"""`data.source: {kind: module}`: a user's class of captioned images, read like an image folder.

The class (schemas/data.py ModuleData) needs __len__, caption(i) and image(i); size(i) spares bucketing a decode
of every image, key(i) names an image in caches and reports. Everything else an image folder gives the data
pipeline (sizes, content hashes for cache keys, bad-sample reports) is derived here.
"""
from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image

from ...schemas.targets import load_target, search_path
from .sources import BadSample, DataError, Record


class ModuleSource:
    kind = "module"

    def __init__(self, block, spec_dir: str | None = None):
        self.target = block.target
        cls = load_target(block.target, search_path(spec_dir))
        try:
            self.user = cls(**block.options)
            count = len(self.user)
        except Exception as exc:  # noqa: BLE001 - the user's constructor: say whose, and keep its words
            raise DataError(f"{block.target}({', '.join(block.options)}) failed: {type(exc).__name__}: {exc}") from None
        if count < 1:
            raise DataError(f"{block.target} holds no images (len() is {count})")
        self.records = [Record(str(self.user.key(i)) if hasattr(self.user, "key") else str(i), str(self.user.caption(i)),
                               {}) for i in range(count)]
        self.classes, self.unfiled = (), []
        self._sizes: dict[int, tuple[int, int]] = {}
        self._hashes: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.records)

    def record(self, i: int) -> Record:
        return self.records[i]

    def label(self, i: int) -> int:
        return 0

    def path(self, i: int) -> str:
        """How reports name image i."""
        return f"{self.target}[{self.records[i].key}]"

    def size(self, i: int) -> tuple[int, int]:
        if i not in self._sizes:
            self._sizes[i] = tuple(self.user.size(i)) if hasattr(self.user, "size") else self._decoded(i).shape[:2]
        return self._sizes[i]

    def image(self, i: int) -> Image.Image:
        return Image.fromarray(self._decoded(i), "RGB")

    def _decoded(self, i: int) -> np.ndarray:
        try:
            found = self.user.image(i)
            pixels = np.asarray(found.convert("RGB") if isinstance(found, Image.Image) else found)
        except Exception as exc:  # noqa: BLE001 - one bad item: data.on_bad_sample decides
            raise BadSample(self.path(i), f"image() failed: {type(exc).__name__}: {exc}") from None
        if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
            raise BadSample(self.path(i), f"image() gave {pixels.dtype} {pixels.shape}, not an (H, W, 3) uint8 array")
        self._hashes[i] = hashlib.sha256(f"{pixels.shape}".encode() + pixels.tobytes()).hexdigest()
        return pixels

    def content_hash(self, i: int) -> str:
        """sha256 of the pixels: a cache key that changes exactly when the image does."""
        if i not in self._hashes:
            self._decoded(i)
        return self._hashes[i]

    def summary(self) -> dict:
        return {"module": self.target, "num_found": len(self), "num_kept": len(self), "num_filtered": 0,
                "missing_field": {}, "filters": [], "by_filter": {}}
