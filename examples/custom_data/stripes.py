"""A data source of your own (`data.source: {kind: module, target: 'stripes:Stripes'}`): captioned images of
coloured stripes, drawn on the fly, in three shapes of image (wide, square, tall) for the aspect buckets.

The class needs __len__, caption(i) and image(i); size(i) lets `flowspec plan` bucket the images without
drawing them, key(i) names an image in caches and reports. Its keyword arguments come from `options:`.
"""
from __future__ import annotations

import numpy as np

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 220), "yellow": (235, 210, 40)}
SIZES = [(32, 64), (48, 48), (64, 32)]  # (height, width)


class Stripes:
    def __init__(self, count: int = 256, seed: int = 0):
        rng = np.random.default_rng(seed)
        names = list(COLOURS)
        self.items = [(names[rng.integers(len(names))], bool(rng.integers(2)), int(rng.integers(2, 6)),
                       SIZES[rng.integers(len(SIZES))]) for _ in range(count)]

    def __len__(self) -> int:
        return len(self.items)

    def caption(self, i: int) -> str:
        colour, vertical, count, _ = self.items[i]
        return f"{count} {colour} {'vertical' if vertical else 'horizontal'} stripes"

    def size(self, i: int) -> tuple[int, int]:
        return self.items[i][3]

    def key(self, i: int) -> str:
        return f"stripes-{i:05d}"

    def image(self, i: int) -> np.ndarray:
        colour, vertical, count, (height, width) = self.items[i]
        out = np.full((height, width, 3), 255, np.uint8)
        length = width if vertical else height
        band = length / (2 * count)
        for k in range(count):  # a coloured band, then white
            start, stop = round(2 * k * band), round((2 * k + 1) * band)
            if vertical:
                out[:, start:stop] = COLOURS[colour]
            else:
                out[start:stop] = COLOURS[colour]
        return out
