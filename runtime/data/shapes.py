"""Procedural captioned images of coloured shapes (design section 6).

Every scene is a pure function of (seed, index, complexity band), laid out in resolution-free
[0, 1] coordinates and rendered at any height and width. The vocabulary is deliberately small
and bold (six saturated colours, three shapes, two sizes) so that tiny models can learn it at
32x32 and `runtime/eval/checker.py` can score their generations from pixels alone.

Caption grammar: each level adds one more thing to get right. Size is stated from level 2 on and
count from level 3 on (level 4 uses 1 or 2 so that the objects fit on one side; level 5 has two
different single objects):
  1  colour + shape              "a red circle"
  2  + size                      "a small red circle"
  3  + count (2 or 3)            "three large blue squares"
  4  + position (count 1 or 2)   "two small red circles on the left", "a large cyan square at the top"
  5  + a relation between two different objects, each with its size
                                 "a small red circle above a large blue square"
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from ...schemas.data import COLOR_NAMES, MAX_COMPLEXITY, SHAPE_NAMES, SHAPES_CLASSES

# Saturated colours whose pairwise RGB distance is >= ~120 and which all lie far from white,
# black and light grey, so a pixel's nearest colour survives anti-aliasing, blur and noise.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 230),
    "yellow": (245, 205, 20),
    "purple": (150, 50, 200),
    "cyan": (20, 190, 210),
}
# Fill ratios of their bounding boxes are 0.785 / 1.0 / 0.5: easy to tell apart at 32 px.
SHAPES = SHAPE_NAMES
# Half the side of the object's bounding box, as a fraction of the image's short side. At 32 px a
# small object is ~7 px across and a large one ~12 px: both recognisable, and the sizes differ by
# a factor the checker can threshold (see checker.SIZE_THRESHOLD).
SIZES: dict[str, float] = {"small": 0.11, "large": 0.18}
POSITIONS = ("left", "right", "top", "bottom")
POSITION_PHRASES = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom"}
RELATIONS = ("above", "below", "left of", "right of")
RELATION_PHRASES = {"above": "above", "below": "below", "left of": "to the left of", "right of": "to the right of"}
NUMBERS = {1: "a", 2: "two", 3: "three"}
BACKGROUNDS = {"white": 255, "black": 0, "noise": 230}
NUM_CLASSES = len(SHAPES_CLASSES)
assert tuple(COLORS) == COLOR_NAMES  # class labels and the schema's class names follow this order

MARGIN = 0.03  # clear border (short-side units) so the checker can read the background there
GAP = 0.08  # clear space between object boxes (>= 2 px at 32 px, so components never touch)
REGION_EDGE = 0.38  # objects "on the left" have their centre at x <= 0.38 (checker accepts < 0.45)
PERPENDICULAR_JITTER = 0.05  # related objects stay nearly aligned so only the named relation holds
SUPERSAMPLE = 4


@dataclass(frozen=True)
class ShapeObject:
    shape: str
    color: str
    size: str
    cx: float  # centre in [0, 1] image coordinates, x to the right
    cy: float  # y down

    def radius(self, height: int, width: int) -> float:
        """Half the side of the bounding box, in pixels, from the size and the image's short side."""
        return SIZES[self.size] * min(height, width)


@dataclass(frozen=True)
class ShapeScene:
    objects: tuple[ShapeObject, ...]
    caption: str
    complexity: int


@dataclass(frozen=True)
class ShapesItem:
    image: np.ndarray  # (H, W, 3) uint8
    caption: str
    scene: ShapeScene


# ------------------------------------------------------------------------------------- captions
def object_phrase(count: int, size: str | None, color: str, shape: str) -> str:
    words = [NUMBERS[count], size, color, shape + ("s" if count > 1 else "")]
    return " ".join(w for w in words if w)


# -------------------------------------------------------------------------------------- layout
# Layout happens in a unit square whose side stands for the image's short side. Widening either
# axis only moves centres apart in pixels while radii stay fixed, so a layout that is inside and
# non-overlapping here is so at every aspect ratio.
def _separated(a: tuple[float, float, float], b: tuple[float, float, float]) -> bool:
    (ax, ay, ar), (bx, by, br) = a, b
    return abs(ax - bx) >= ar + br + GAP or abs(ay - by) >= ar + br + GAP


def _range(radius: float, region: str | None, axis: str) -> tuple[float, float]:
    lo, hi = radius + MARGIN, 1.0 - radius - MARGIN
    if (axis, region) in (("x", "left"), ("y", "top")):
        hi = min(hi, REGION_EDGE)
    if (axis, region) in (("x", "right"), ("y", "bottom")):
        lo = max(lo, 1.0 - REGION_EDGE)
    return lo, hi


def _fallback(radii: list[float], region: str | None) -> list[tuple[float, float]]:
    """Deterministic 2x2-grid layout used when rejection sampling fails (rare: crowded scenes)."""
    cells = [(0.27, 0.27), (0.27, 0.73), (0.73, 0.27), (0.73, 0.73)]
    keep = {"left": lambda c: c[0] < 0.5, "right": lambda c: c[0] > 0.5,
            "top": lambda c: c[1] < 0.5, "bottom": lambda c: c[1] > 0.5}.get(region, lambda c: True)
    return [c for c in cells if keep(c)][: len(radii)]


def _place(rng: np.random.Generator, radii: list[float], region: str | None = None) -> list[tuple[float, float]]:
    """Centres for objects of the given radii, all inside `region` (a side or None) and apart.

    Objects go in one at a time, each retried against those already placed (far likelier to succeed
    for three large objects than redrawing the whole scene); a dead end restarts the scene."""
    for _ in range(50):
        boxes: list[tuple[float, float, float]] = []
        for r in radii:
            (xlo, xhi), (ylo, yhi) = _range(r, region, "x"), _range(r, region, "y")
            for _ in range(50):
                box = (rng.uniform(xlo, xhi), rng.uniform(ylo, yhi), r)
                if all(_separated(box, other) for other in boxes):
                    boxes.append(box)
                    break
            else:
                break
        if len(boxes) == len(radii):
            return [(x, y) for x, y, _ in boxes]
    return _fallback(radii, region)


def _place_related(rng: np.random.Generator, ra: float, rb: float, relation: str) -> list[tuple[float, float]]:
    """Centres of A and B with "A <relation> B" along one axis and nearly aligned on the other."""
    along, before = {"above": (1, True), "below": (1, False), "left of": (0, True), "right of": (0, False)}[relation]
    r = max(ra, rb)
    for _ in range(200):
        a = rng.uniform(ra + MARGIN, 1 - ra - MARGIN)
        b = rng.uniform(rb + MARGIN, 1 - rb - MARGIN)
        if (b - a if before else a - b) >= ra + rb + GAP:
            break
    else:  # deterministic fallback: the two ends of the axis
        a, b = (0.27, 0.73) if before else (0.73, 0.27)
    p = rng.uniform(r + MARGIN, 1 - r - MARGIN)
    pa, pb = (float(np.clip(p + rng.uniform(-1, 1) * PERPENDICULAR_JITTER / 2, r + MARGIN, 1 - r - MARGIN))
              for _ in range(2))
    return [(pa, a), (pb, b)] if along == 1 else [(a, pa), (b, pb)]


# --------------------------------------------------------------------------------------- scenes
def _check_band(complexity: tuple[int, int]) -> tuple[int, int]:
    lo, hi = (int(v) for v in complexity)
    if not 1 <= lo <= hi <= MAX_COMPLEXITY:
        raise ValueError(f"complexity must satisfy 1 <= lowest <= highest <= {MAX_COMPLEXITY}, got [{lo}, {hi}]")
    return lo, hi


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _scene_at_level(rng: np.random.Generator, level: int) -> ShapeScene:
    colors = tuple(COLORS)
    color, shape, size = _pick(rng, colors), _pick(rng, SHAPES), _pick(rng, tuple(SIZES))
    if level == 5:
        relation = _pick(rng, RELATIONS)
        while True:  # the second object differs in colour or shape, so the caption is unambiguous
            color_b, shape_b = _pick(rng, colors), _pick(rng, SHAPES)
            if (color_b, shape_b) != (color, shape):
                break
        size_b = _pick(rng, tuple(SIZES))
        (xa, ya), (xb, yb) = _place_related(rng, SIZES[size], SIZES[size_b], relation)
        objects = (ShapeObject(shape, color, size, xa, ya), ShapeObject(shape_b, color_b, size_b, xb, yb))
        caption = (f"{object_phrase(1, size, color, shape)} {RELATION_PHRASES[relation]} "
                   f"{object_phrase(1, size_b, color_b, shape_b)}")
        return ShapeScene(objects, caption, level)
    count = {3: (2, 3), 4: (1, 2)}.get(level, (1,))
    count = _pick(rng, count)
    region = _pick(rng, POSITIONS) if level == 4 else None
    centres = _place(rng, [SIZES[size]] * count, region)
    objects = tuple(ShapeObject(shape, color, size, x, y) for x, y in centres)
    caption = object_phrase(count, size if level >= 2 else None, color, shape)
    if region:
        caption += " " + POSITION_PHRASES[region]
    return ShapeScene(objects, caption, level)


def _scene_from_rng(rng: np.random.Generator, complexity: tuple[int, int]) -> ShapeScene:
    lo, hi = _check_band(complexity)
    return _scene_at_level(rng, int(rng.integers(lo, hi + 1)))


def make_scene(seed: int, index: int, complexity: tuple[int, int]) -> ShapeScene:
    """The scene for (seed, index), its level drawn uniformly inside the band; no other state."""
    return _scene_from_rng(np.random.default_rng([seed, index]), complexity)


def eval_captions(seed: int, n: int, complexity: tuple[int, int]) -> list[str]:
    """A fixed set of n captions, levels cycling evenly over the band, distinct while possible.

    Drawn from a stream separate from training indices (the trailing 1 in the seed sequence)."""
    lo, hi = _check_band(complexity)
    rng = np.random.default_rng([seed, n, lo, hi, 1])
    captions: list[str] = []
    for i in range(n):
        level = lo + i % (hi - lo + 1)
        for _ in range(20):  # level 1 has only 18 captions: allow repeats once they run out
            caption = _scene_at_level(rng, level).caption
            if caption not in captions:
                break
        captions.append(caption)
    return captions


# ------------------------------------------------------------------------------------ rendering
def _polygon(shape: str, x: float, y: float, r: float) -> list[tuple[float, float]]:
    if shape == "triangle":  # upright: apex at the top centre of the box
        return [(x, y - r), (x + r, y + r), (x - r, y + r)]
    return [(x - r, y - r), (x + r, y - r), (x + r, y + r), (x - r, y + r)]


def _background(scene: ShapeScene, height: int, width: int, background: str) -> np.ndarray:
    if background not in BACKGROUNDS:
        raise ValueError(f"background must be one of {sorted(BACKGROUNDS)}, got {background!r}")
    base = np.full((height, width, 3), float(BACKGROUNDS[background]))
    if background == "noise":  # light grey noise, seeded from the scene so it is reproducible
        rng = np.random.default_rng(zlib.crc32(repr(scene).encode()))
        base += rng.normal(0.0, 10.0, (height, width, 1))
    return base


def render(scene: ShapeScene, height: int, width: int, background: str = "white") -> np.ndarray:
    """(height, width, 3) uint8: shapes drawn at 4x and box-filtered down, over the background."""
    s = SUPERSAMPLE
    color = Image.new("RGB", (width * s, height * s))
    alpha = Image.new("L", (width * s, height * s), 0)
    paint, mask = ImageDraw.Draw(color), ImageDraw.Draw(alpha)
    for obj in scene.objects:
        x, y, r = obj.cx * width * s, obj.cy * height * s, obj.radius(height, width) * s
        rgb = COLORS[obj.color]
        if obj.shape == "circle":  # PIL boxes include their far edge: pull it in by one pixel
            box = (x - r, y - r, x + r - 1, y + r - 1)
            paint.ellipse(box, fill=rgb)
            mask.ellipse(box, fill=255)
        else:
            points = _polygon(obj.shape, x, y, r)
            paint.polygon(points, fill=rgb)
            mask.polygon(points, fill=255)
    fg = np.asarray(color.resize((width, height), Image.Resampling.BOX), dtype=np.float64)
    # Box-filtered coverage and premultiplied colour agree pixel by pixel since objects never touch.
    a = np.asarray(alpha.resize((width, height), Image.Resampling.BOX), dtype=np.float64)[..., None] / 255.0
    fg = np.where(a > 0, fg / np.maximum(a, 1e-6), 0.0)
    out = a * fg + (1.0 - a) * _background(scene, height, width, background)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# -------------------------------------------------------------------------------------- dataset
def class_label(scene: ShapeScene) -> int:
    """Class of the first object's (shape, colour), in [0, NUM_CLASSES), for class-conditional models: the
    index of its name ("red circle") in schemas/data.py SHAPES_CLASSES."""
    first = scene.objects[0]
    return SHAPES.index(first.shape) * len(COLORS) + tuple(COLORS).index(first.color)


class ShapesDataset:
    """`num_images` scenes per epoch; item i is a pure function of (seed, i, band) at any size."""

    def __init__(self, block, seed: int):
        self.block, self.seed = block, int(seed)

    def __len__(self) -> int:
        return self.block.num_images

    def item(self, index: int, height: int, width: int, complexity: tuple[int, int]) -> ShapesItem:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        scene = make_scene(self.seed, index, complexity)
        return ShapesItem(render(scene, height, width, self.block.background), scene.caption, scene)
