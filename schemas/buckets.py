"""Aspect-ratio bucket geometry, shared by the compiler's checks and the runtime (plain math, no torch)."""
from __future__ import annotations

import math


def bucket_sides(resolution: int, ratio: float, multiple: int) -> tuple[int, int]:
    """(height, width) of the bucket with area ~ resolution^2 and height/width ~ ratio, each side a
    multiple of `multiple` (rounded to the nearest, at least one multiple)."""
    # Specs refuse such ratios; a caller that bypasses the schema gets this, not an OverflowError from round().
    if not (math.isfinite(ratio) and ratio > 0):
        raise ValueError(f"an aspect ratio must be a finite number > 0, not {ratio!r}")
    height = max(multiple, round(resolution * math.sqrt(ratio) / multiple) * multiple)
    width = max(multiple, round(resolution / math.sqrt(ratio) / multiple) * multiple)
    return height, width
