"""GenEval-like procedural checker for the shapes grammar (design section 6).

It sees only an image and its caption, never the scene, because it scores model generations:
it parses what the caption requires, finds coloured objects in the pixels and checks each
requirement. Per-attribute checks (a check is present only where the caption asks for it):
  color     every colour named is present (on any shape)
  shape     every shape named is present (in any colour)
  count     exactly the named number of each (colour, shape), and no other objects at all
            ("a" means one; extras fail so a model cannot win by painting everything)
  size      every matching object has the named size
  position  every matching object lies on the named side
  relation  the first object stands in the named relation to the second
Chance level: see `chance_accuracy`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..data.shapes import COLORS, NUMBERS, POSITION_PHRASES, RELATION_PHRASES, SHAPES, SIZES, make_scene, render

SIZE_THRESHOLD = float(np.sqrt(SIZES["small"] * SIZES["large"]))  # half-extent / short side
MIN_ALPHA = 0.5  # a pixel is foreground when it is at least half object colour
MAX_RESIDUAL = 70.0  # RGB distance off the background-to-colour line still accepted
MIN_AREA = 0.3 * 2 * SIZES["small"] ** 2  # a third of a small triangle, in short-side^2 units
SIDE_EDGE = 0.45  # "on the left": centre x < 0.45 of the width (the renderer uses <= 0.38)
MIN_FIT = 0.8  # below this a blob matches no shape and counts as "other" (renders fit >= 0.88)
MAX_ELONGATION = 2.0  # covariance eigenvalue ratio: 1 for circle and square, 1.33 for the triangle
FIT_BLURS = (0.0, 0.6, 1.0)  # pixels: renderer output is crisp, generations and degraded copies are not
SUPERSAMPLE = 4  # template sample points per pixel side
RELATION_MARGIN = 0.1  # "above": at least 0.1 short sides higher, and more above than beside


@dataclass(frozen=True)
class Expectation:
    color: str
    shape: str
    count: int
    size: str | None = None
    position: str | None = None
    relation: str | None = None  # this object <relation> the expectation at index `anchor`
    anchor: int | None = None


@dataclass(frozen=True)
class Detection:
    color: str
    shape: str  # one of SHAPES, or "other" for blobs that fit none
    size: str
    cx: float  # centroid in [0, 1] image coordinates
    cy: float
    area: float  # coverage-weighted, in short-side^2 units
    fit: float  # 1 - L1 distance to the best shape template / twice the area (1 = perfect)


@dataclass(frozen=True)
class CheckResult:
    correct: bool
    checks: dict[str, bool]


# -------------------------------------------------------------------------------------- parsing
_WORD_NUMBERS = {word: n for n, word in NUMBERS.items()}
_SIDES = {tuple(p.split()): side for side, p in POSITION_PHRASES.items()}
_RELATIONS = {tuple(p.split()): rel for rel, p in RELATION_PHRASES.items()}


def _expect(words: list[str], what: str, options, caption: str) -> str:
    word = words.pop(0) if words else None
    if word not in options:
        found = f"unknown word {word!r}" if word else "the caption ends"
        raise ValueError(f"cannot parse caption {caption!r}: {found} where {what} was expected "
                         f"(one of: {', '.join(options)})")
    return word


def _object(words: list[str], caption: str, allow_plural: bool) -> Expectation:
    count = _WORD_NUMBERS[_expect(words, "a number", _WORD_NUMBERS if allow_plural else ["a"], caption)]
    size = words.pop(0) if words and words[0] in SIZES else None
    color = _expect(words, "a colour" if size else "a size or colour", COLORS, caption)
    nouns = [s + "s" for s in SHAPES] if count > 1 else list(SHAPES)
    shape = _expect(words, "a plural shape" if count > 1 else "a shape", nouns, caption)
    return Expectation(color, shape.removesuffix("s") if count > 1 else shape, count, size)


def parse_caption(caption: str) -> list[Expectation]:
    """What the caption requires: one object group, plus a side or a relation to a second object."""
    words = caption.lower().strip().rstrip(".").split()  # case and a final full stop do not matter
    first = _object(words, caption, allow_plural=True)
    if not words:
        return [first]
    for phrase, side in _SIDES.items():
        if tuple(words) == phrase:
            return [replace(first, position=side)]
    for phrase, relation in _RELATIONS.items():
        if tuple(words[: len(phrase)]) == phrase and first.count == 1:
            rest = words[len(phrase):]
            second = _object(rest, caption, allow_plural=False)
            if rest:
                raise ValueError(f"cannot parse caption {caption!r}: unexpected {' '.join(rest)!r} at the end")
            if (second.color, second.shape) == (first.color, first.shape):
                raise ValueError(f"cannot parse caption {caption!r}: a relation needs two different objects")
            return [replace(first, relation=relation, anchor=1), second]
    options = [" ".join(p) for p in (*_SIDES, *_RELATIONS)]
    raise ValueError(f"cannot parse caption {caption!r}: unexpected {' '.join(words)!r} after the object "
                     f"(expected nothing, or one of: {', '.join(options)}; relations need 'a' single object)")


# ------------------------------------------------------------------------------------ detection
def _background(image: np.ndarray) -> np.ndarray:
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]]).astype(np.float64)
    return np.median(border, axis=0)


def _classify(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel: the index into COLORS or -1 for background, and each colour's coverage (H, W, K).

    A pixel is modelled as a blend of the background b and one palette colour c (anti-aliasing,
    blur): it takes the colour whose b-to-c line passes closest, if it is at least half-way along.
    The coverage (how far along) of every colour is kept for the soft shape fit."""
    b = _background(image)
    p = image.reshape(-1, 3).astype(np.float64) - b
    d = np.array(list(COLORS.values()), dtype=np.float64) - b  # (K, 3)
    dots = sum(p[:, c, None] * d[None, :, c] for c in range(3))  # (N, K) p.d, without BLAS (see _blur)
    alpha = np.clip(dots / np.maximum((d * d).sum(1), 1.0), 0.0, 1.0)
    # |p - alpha d|^2 expanded, to avoid an (N, K, 3) array on large images
    residual = np.sqrt(np.maximum((p * p).sum(1, keepdims=True) - 2 * alpha * dots + alpha**2 * (d * d).sum(1), 0.0))
    best = residual.argmin(1)
    rows = np.arange(len(p))
    ok = (alpha[rows, best] >= MIN_ALPHA) & (residual[rows, best] <= MAX_RESIDUAL)
    alpha = np.where(residual <= MAX_RESIDUAL, alpha, 0.0)
    return np.where(ok, best, -1).reshape(image.shape[:2]), alpha.reshape(*image.shape[:2], -1)


def _find(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def _components(mask: np.ndarray) -> np.ndarray:
    """8-connected components of a boolean mask: an id per pixel (0, 1, ...), -1 off the mask.

    Union-find over row runs: a few Python steps per row and object, fine up to 256x256."""
    runs, parent, previous, last = [], [], [], -2
    for y in np.flatnonzero(mask.any(axis=1)):  # empty rows have no runs
        if y != last + 1:
            previous = []
        row, last = mask[y], y
        edges = np.flatnonzero(np.diff(np.concatenate(([0], row.astype(np.int8), [0]))))
        current = []
        for start, end in zip(edges[::2], edges[1::2]):
            k = len(runs)
            runs.append((int(y), int(start), int(end)))
            parent.append(k)
            for j in previous:  # runs of the row above touching this one, diagonals included
                _, s, e = runs[j]
                if s <= end and start <= e:
                    parent[_find(parent, k)] = _find(parent, j)
            current.append(k)
        previous = current
    ids = np.full(mask.shape, -1)
    roots: dict[int, int] = {}
    for k, (y, start, end) in enumerate(runs):
        ids[y, start:end] = roots.setdefault(_find(parent, k), len(roots))
    return ids


def _template(shape: str, area: float, cx: float, cy: float, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Coverage of each sample point by `shape` with the given area and centroid."""
    if shape == "circle":
        r = np.sqrt(area / np.pi)
        return ((xs - cx) ** 2 + (ys - cy) ** 2 <= r * r).astype(np.float64)
    if shape == "square":
        r = np.sqrt(area) / 2
        return ((abs(xs - cx) <= r) & (abs(ys - cy) <= r)).astype(np.float64)
    r = np.sqrt(area / 2)  # upright triangle in a 2r box; its centroid sits r/3 below the box centre
    top = cy - r / 3 - r
    return ((ys >= top) & (ys <= top + 2 * r) & (abs(xs - cx) <= (ys - top) / 2)).astype(np.float64)


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur by shifted sums (no BLAS: its threads crawl on a busy 2-core box)."""
    if sigma == 0:
        return image
    radius = int(np.ceil(3 * sigma))
    kernel = np.exp(-np.arange(-radius, radius + 1) ** 2 / (2 * sigma * sigma))
    kernel /= kernel.sum()
    (h, w), padded = image.shape, np.pad(image, radius)
    rows = sum(k * padded[i:i + h] for i, k in enumerate(kernel))
    return sum(k * rows[:, i:i + w] for i, k in enumerate(kernel))


def _fit_shape(weights: np.ndarray, y0: int, x0: int, cx: float, cy: float) -> tuple[str, float]:
    """The shape whose ideal rendering (same area and centroid) best matches the soft coverage.

    Fitting every pixel's coverage is far steadier than bounding-box ratios for 7-pixel objects,
    whose boxes gain or lose a whole row to anti-aliasing and noise. Each template is also tried
    blurred, since a blurred small square otherwise looks like a circle. Returns (shape, fit)."""
    sub = (np.arange(SUPERSAMPLE) + 0.5) / SUPERSAMPLE
    ys = (y0 + np.arange(weights.shape[0]))[:, None, None, None] + sub[None, None, :, None]
    xs = (x0 + np.arange(weights.shape[1]))[None, :, None, None] + sub[None, None, None, :]
    area = weights.sum()
    best, best_fit = "other", 0.0
    for shape in SHAPES:
        coverage = _template(shape, area, cx, cy, xs, ys).mean(axis=(2, 3))
        for sigma in FIT_BLURS:
            fit = 1.0 - np.abs(_blur(coverage, sigma) - weights).sum() / (2 * area)
            if fit > best_fit:
                best, best_fit = shape, fit
    return (best if best_fit >= MIN_FIT else "other"), float(best_fit)


def _elongation(weights: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> float:
    """Ratio of the principal second moments of the coverage (1 for an isotropic blob)."""
    cov = np.array([[(weights * dx * dx).sum(), (weights * dx * dy).sum()],
                    [(weights * dx * dy).sum(), (weights * dy * dy).sum()]])
    low, high = np.linalg.eigvalsh(cov)
    return float(high / max(low, 1e-9))


def _describe(color: str, ids: np.ndarray, component: int, alpha: np.ndarray) -> Detection | None:
    height, width = ids.shape
    short = min(height, width)
    rows, cols = np.nonzero(ids == component)
    if len(rows) < MIN_AREA * short * short:
        return None  # noise speck
    y0, y1 = max(rows.min() - 2, 0), min(rows.max() + 3, height)  # room for the blurred fringe
    x0, x1 = max(cols.min() - 2, 0), min(cols.max() + 3, width)
    patch = ids[y0:y1, x0:x1]
    # Its own pixels plus the faint fringe around them; other same-coloured objects excluded.
    weights = np.where((patch == component) | (patch == -1), alpha[y0:y1, x0:x1], 0.0)
    area = weights.sum()
    yy, xx = np.mgrid[y0:y1, x0:x1] + 0.5
    cx, cy = (weights * xx).sum() / area, (weights * yy).sum() / area
    shape, fit = _fit_shape(weights, y0, x0, cx, cy)
    if _elongation(weights, xx - cx, yy - cy) > MAX_ELONGATION:
        shape = "other"  # a bar or a flat ellipse is none of the shapes, however well it fits one
    factor = {"circle": np.pi, "square": 4.0}.get(shape, 2.0)  # area = factor * half-side^2
    size = "large" if np.sqrt(area / factor) / short > SIZE_THRESHOLD else "small"
    return Detection(color, shape, size, cx / width, cy / height, area / short**2, fit)


def detect(image: np.ndarray) -> list[Detection]:
    """Objects in an (H, W, 3) uint8 image: connected regions of one palette colour, largest first."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {image.shape}")
    labels, alpha = _classify(image)
    found = []
    for k, color in enumerate(COLORS):
        ids = _components(labels == k)
        for component in range(ids.max() + 1):
            detection = _describe(color, ids, component, alpha[..., k])
            if detection is not None:
                found.append(detection)
    return sorted(found, key=lambda d: -d.area)


# --------------------------------------------------------------------------------------- checks
def _on_side(d: Detection, side: str) -> bool:
    return {"left": d.cx < SIDE_EDGE, "right": d.cx > 1 - SIDE_EDGE,
            "top": d.cy < SIDE_EDGE, "bottom": d.cy > 1 - SIDE_EDGE}[side]


def _related(a: Detection, b: Detection, relation: str, height: int, width: int) -> bool:
    short = min(height, width)  # compare offsets in pixels so the aspect ratio does not skew them
    dx, dy = (b.cx - a.cx) * width / short, (b.cy - a.cy) * height / short
    along, across = {"above": (dy, dx), "below": (-dy, dx), "left of": (dx, dy), "right of": (-dx, dy)}[relation]
    return along > RELATION_MARGIN and along > abs(across)


def check(image: np.ndarray, caption: str) -> CheckResult:
    """Whether the image shows what the caption says, overall and per attribute."""
    wanted = parse_caption(caption)
    found = detect(image)
    height, width = image.shape[:2]
    matches = [[d for d in found if (d.color, d.shape) == (e.color, e.shape)] for e in wanted]
    checks = {
        "color": all(any(d.color == e.color for d in found) for e in wanted),
        "shape": all(any(d.shape == e.shape for d in found) for e in wanted),
        "count": all(len(m) == e.count for m, e in zip(matches, wanted))
        and len(found) == sum(e.count for e in wanted),
    }
    if any(e.size for e in wanted):
        checks["size"] = all(m and all(d.size == e.size for d in m) for m, e in zip(matches, wanted) if e.size)
    if any(e.position for e in wanted):
        checks["position"] = all(m and all(_on_side(d, e.position) for d in m)
                                 for m, e in zip(matches, wanted) if e.position)
    for m, e in zip(matches, wanted):
        if e.relation:  # the largest matching object of each side stands for it
            other = matches[e.anchor]
            checks["relation"] = bool(m and other and _related(m[0], other[0], e.relation, height, width))
    checks = {k: bool(v) for k, v in checks.items()}
    return CheckResult(all(checks.values()), checks)


def accuracy(images, captions) -> float:
    """Fraction of (image, caption) pairs the checker accepts."""
    results = [check(img, cap).correct for img, cap in zip(images, captions, strict=True)]
    return float(np.mean(results)) if results else 0.0


def attribute_accuracy(images, captions) -> dict[str, float]:
    """Per attribute: the fraction passing among the pairs whose caption asks for it."""
    passed: dict[str, list[bool]] = {}
    for img, cap in zip(images, captions, strict=True):
        for name, ok in check(img, cap).checks.items():
            passed.setdefault(name, []).append(ok)
    return {name: float(np.mean(v)) for name, v in passed.items()}


def chance_accuracy(complexity: tuple[int, int], n: int = 300, seed: int = 0, size: int = 32) -> float:
    """What a guesser scores: a clean image of one random caption, checked against another.

    Monte Carlo over n pairs at size x size. Analytically (6 colours x 3 shapes x 2 sizes): level 1
    1/18 = 0.056, level 2 1/36 = 0.028, level 3 1/72 = 0.014, level 4 ~0.006 (the side must also
    agree), level 5 ~1e-4; measured with n=3000: 0.059, 0.029, 0.015, 0.006, and 0.009 for band
    [1, 5]. A blank image scores 0: every caption asks for at least one object."""
    scenes = [make_scene(seed, i, complexity) for i in range(n)]
    others = [make_scene(seed + 1, i, complexity) for i in range(n)]
    return accuracy([render(s, size, size) for s in scenes], [o.caption for o in others])
