"""Aspect-ratio bucket geometry, shared by the compiler's checks and the runtime (plain math, no torch)."""
from __future__ import annotations

import math


def bucket_sides(resolution: int, ratio: float, multiple: int) -> tuple[int, int]:
    """(height, width) of the bucket with area ~ resolution^2 and height/width ~ ratio, each side a
    multiple of `multiple` (rounded to the nearest, at least one multiple)."""
    height = max(multiple, round(resolution * math.sqrt(ratio) / multiple) * multiple)
    width = max(multiple, round(resolution / math.sqrt(ratio) / multiple) * multiple)
    return height, width
