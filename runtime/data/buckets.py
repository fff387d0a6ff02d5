"""Aspect-ratio buckets: the table, the nearest bucket of an image, and resize-to-cover then crop.

Reference: algorithms.md section 10. An image goes to the bucket minimising |log(h/w) - log(bh/bw)|
(log distance treats portrait and landscape symmetrically), is resized by
scale = max(bh/h, bw/w) so that it covers the bucket on both sides, and is then cropped to the
bucket (centre or random). The bucket geometry itself is `schemas.buckets.bucket_sides`, shared
with the compiler's checks and the sampler, so training and `flowspec plan` never disagree.

No torch here: `flowspec plan` and the data workers use this module.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from PIL import Image

from ...schemas.buckets import bucket_sides

CROPS = ("center", "random")


@dataclass(frozen=True)
class Bucket:
    height: int
    width: int
    ratio: float  # the requested height / width (the actual one is height / width)

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width


def make_buckets(resolution: int, ratios: Sequence[float], multiple: int) -> tuple[Bucket, ...]:
    """One bucket per requested ratio, in the given order, sides from `bucket_sides`.

    Ratios that round to the same (height, width) collapse into one bucket, the first one asked
    for: two identical shapes would split one shape's images between two buckets (smaller
    buckets, more remainders) for no gain, and keeping the first keeps indices stable when a
    user appends ratios.
    """
    if resolution <= 0 or multiple <= 0:
        raise ValueError(f"resolution and multiple must be > 0, got {resolution} and {multiple}")
    if not ratios:
        raise ValueError("at least one aspect ratio is needed")
    buckets: dict[tuple[int, int], Bucket] = {}
    for ratio in ratios:
        if not ratio > 0 or not math.isfinite(ratio):
            raise ValueError(f"aspect ratios must be finite and > 0, got {ratio}")
        height, width = bucket_sides(resolution, ratio, multiple)
        buckets.setdefault((height, width), Bucket(height, width, float(ratio)))
    return tuple(buckets.values())


def _ratio_error(height: int, width: int, bucket: Bucket) -> Fraction:
    """exp(|log(h/w) - log(bh/bw)|) as an exact fraction (>= 1).

    It is monotone in the log distance, and exact integer arithmetic makes mirror ties (a square
    image between a 2:1 and a 1:2 bucket) real ties, so the lower index wins instead of whichever
    side float rounding happens to favour.
    """
    a, b = height * bucket.width, width * bucket.height
    return Fraction(max(a, b), min(a, b))


def assign(height: int, width: int, buckets: Sequence[Bucket]) -> int:
    """Index of the bucket nearest to an image of height x width in log aspect ratio.

    Uses each bucket's actual sides (not the requested ratio), so the image goes where its crop
    is smallest. Ties go to the lower index.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image sides must be > 0, got {height}x{width}")
    if not buckets:
        raise ValueError("no buckets to assign to")
    errors = [_ratio_error(height, width, bucket) for bucket in buckets]
    return errors.index(min(errors))  # index() returns the first minimum: ties -> lower index


def cover_size(height: int, width: int, bucket: Bucket) -> tuple[int, int]:
    """(height, width) after resizing by scale = max(bh/h, bw/w), rounded up.

    Exact fractions: with floats, h * (bh/h) can land a hair above bh and round up to bh + 1 (a
    needless extra pixel), or a hair below and round down (an image smaller than its bucket).
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image sides must be > 0, got {height}x{width}")
    scale = max(Fraction(bucket.height, height), Fraction(bucket.width, width))
    return math.ceil(height * scale), math.ceil(width * scale)


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB whatever the input mode; transparency is composited over white, because the colour
    hidden under alpha = 0 is arbitrary (often black) and would otherwise leak into training."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def resize_to_cover(image: Image.Image, bucket: Bucket) -> Image.Image:
    """The RGB image resized (LANCZOS) to `cover_size`: at least the bucket on both sides."""
    height, width = cover_size(image.height, image.width, bucket)
    image = to_rgb(image)
    if (height, width) == (image.height, image.width):
        return image
    return image.resize((width, height), Image.Resampling.LANCZOS)


def crop_offset(height: int, width: int, bucket: Bucket, crop: str = "center",
                rng: np.random.Generator | None = None) -> tuple[int, int]:
    """(top, left) of the bucket-sized window in a height x width image that covers the bucket.

    "random" always draws top and then left (even when one range is empty) so that the rng's
    stream does not depend on the image's shape.
    """
    if height < bucket.height or width < bucket.width:
        raise ValueError(f"a {height}x{width} image does not cover the {bucket.height}x{bucket.width} bucket")
    spare_h, spare_w = height - bucket.height, width - bucket.width
    if crop == "center":
        return spare_h // 2, spare_w // 2
    if crop == "random":
        if rng is None:
            raise ValueError("crop='random' needs an rng (crops are seeded so that runs reproduce)")
        return int(rng.integers(0, spare_h + 1)), int(rng.integers(0, spare_w + 1))
    raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")


def cover_crop(image: Image.Image, bucket: Bucket, crop: str = "center",
               rng: np.random.Generator | None = None) -> np.ndarray:
    """uint8 array (bucket.height, bucket.width, 3): resize to cover the bucket, then crop."""
    if crop not in CROPS:  # fail before the (costly) resize
        raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
    resized = resize_to_cover(image, bucket)
    top, left = crop_offset(resized.height, resized.width, bucket, crop, rng)
    window = resized.crop((left, top, left + bucket.width, top + bucket.height))
    return np.array(window, dtype=np.uint8)  # a writable copy, owned by the caller
