"""Draw a DreamBooth subject the shapes vocabulary cannot describe: a ring (an annulus) with a black and
yellow checker texture, on the white background of the shapes data, at five places and sizes.

    python examples/dreambooth/make_subject.py OUT_FOLDER [--size 32] [--count 5]

Writes OUT_FOLDER/ring-0.png ... (no captions: the DreamBooth stage gives each the instance prompt).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

SUPERSAMPLE = 4  # drawn at 4x, then averaged down: smooth edges like the shapes renderer's
INNER = 0.5  # inner radius / outer radius
CELLS = 4  # checker squares across the ring's diameter
DARK, LIGHT, WHITE = (20, 20, 20), (250, 200, 0), (255, 255, 255)
# (centre x, centre y, outer radius) as fractions of the side: a different place and size in each image
PLACES = [(0.5, 0.5, 0.36), (0.36, 0.4, 0.26), (0.62, 0.6, 0.3), (0.42, 0.64, 0.32), (0.6, 0.36, 0.24),
          (0.5, 0.42, 0.4), (0.38, 0.58, 0.28), (0.64, 0.46, 0.34)]


def ring(size: int, cx: float, cy: float, radius: float) -> np.ndarray:
    """One (size, size, 3) uint8 image of the checker ring."""
    big = size * SUPERSAMPLE
    ys, xs = (np.mgrid[0:big, 0:big] + 0.5) / big
    dist = np.hypot(xs - cx, ys - cy)
    inside = (dist <= radius) & (dist >= INNER * radius)
    cell = 2 * radius / CELLS  # the texture moves and scales with the ring
    dark = ((np.floor((xs - cx + radius) / cell) + np.floor((ys - cy + radius) / cell)) % 2) == 0
    image = np.empty((big, big, 3), dtype=np.float64)
    image[:] = WHITE
    image[inside & dark] = DARK
    image[inside & ~dark] = LIGHT
    small = image.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE, 3).mean(axis=(1, 3))
    return np.round(small).astype(np.uint8)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--count", type=int, default=5, choices=range(1, len(PLACES) + 1))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for i, place in enumerate(PLACES[:args.count]):
        Image.fromarray(ring(args.size, *place)).save(args.out / f"ring-{i}.png")
    print(f"{args.count} subject image(s) of {args.size} px in {args.out}")


if __name__ == "__main__":
    main()
