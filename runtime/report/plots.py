"""Figures drawn with PIL only (no matplotlib dependency): line plots, 2-D scatter plots, image grids."""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# matplotlib's tab10: distinct, colour-blind friendly hues, familiar to readers of training curves.
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
WHITE, BLACK, GRID = (255, 255, 255), (0, 0, 0), (225, 225, 225)
LINE_SIZE = (640, 400)
SCATTER_SIZE = (480, 480)
MARGIN = {"left": 70, "right": 16, "top": 30, "bottom": 46}


def _font(size: int = 12) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap default font
        return ImageFont.load_default()


def _text_size(text: str, font) -> tuple[int, int]:
    left, top, right, bottom = font.getbbox(text or " ")
    return right - left, bottom - top


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten apart), about `count` of them, covering [lo, hi]."""
    if hi - lo <= 0:
        return [lo]
    raw = (hi - lo) / count
    power = 10 ** math.floor(math.log10(raw))
    step = min((f * power for f in (1, 2, 5, 10)), key=lambda st: abs(math.log(st / raw)))  # closest to `count` ticks
    first = math.ceil(lo / step - 1e-9) * step
    ticks = [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]
    return [0.0 if abs(t) < step * 1e-9 else t for t in ticks]


def log_ticks(lo: float, hi: float) -> list[float]:
    """Ticks for an axis holding log10 values: 1-2-5 per decade over a few decades, whole decades beyond."""
    if hi - lo > 3:
        return [t for t in nice_ticks(lo, hi) if float(t).is_integer()] or nice_ticks(lo, hi)
    candidates = [math.log10(m) + e for e in range(math.floor(lo), math.ceil(hi) + 1) for m in (1, 2, 5)]
    ticks = [t for t in candidates if lo - 1e-9 <= t <= hi + 1e-9]
    return ticks if len(ticks) >= 2 else nice_ticks(lo, hi)


def _padded_range(values: Sequence[float], frac: float = 0.05) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if hi == lo:  # a single point or a constant series: give the axis a visible extent around it
        half = abs(lo) * 0.1 or 1.0
        return lo - half, hi + half
    pad = (hi - lo) * frac
    return lo - pad, hi + pad


class _Axes:
    """A rectangle of the canvas mapping data (x, y) to pixels, y pointing up."""

    def __init__(self, box: tuple[int, int, int, int], xlim: tuple[float, float], ylim: tuple[float, float]):
        self.box, self.xlim, self.ylim = box, xlim, ylim

    def px(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x0, y0, x1, y1 = self.box
        fx = (np.asarray(x, float) - self.xlim[0]) / (self.xlim[1] - self.xlim[0])
        fy = (np.asarray(y, float) - self.ylim[0]) / (self.ylim[1] - self.ylim[0])
        return x0 + fx * (x1 - x0), y1 - fy * (y1 - y0)

    def draw_frame(self, draw: ImageDraw.ImageDraw, font, log_y: bool = False) -> None:
        """Grid lines, the frame, and tick marks with labels (on log_y, y holds log10 values)."""
        x0, y0, x1, y1 = self.box
        xticks = nice_ticks(*self.xlim)
        for t, label in zip(xticks, tick_labels(xticks)):
            p = float(self.px(t, self.ylim[0])[0])
            draw.line([(p, y0), (p, y1)], fill=GRID)
            draw.line([(p, y1), (p, y1 + 4)], fill=BLACK)
            w, _ = _text_size(label, font)
            draw.text((p - w / 2, y1 + 6), label, fill=BLACK, font=font)
        yticks = log_ticks(*self.ylim) if log_y else nice_ticks(*self.ylim)
        for t, label in zip(yticks, tick_labels([10 ** t for t in yticks] if log_y else yticks)):
            p = float(self.px(self.xlim[0], t)[1])
            draw.line([(x0, p), (x1, p)], fill=GRID)
            draw.line([(x0 - 4, p), (x0, p)], fill=BLACK)
            w, h = _text_size(label, font)
            draw.text((x0 - 7 - w, p - h / 2 - 2), label, fill=BLACK, font=font)
        draw.rectangle(self.box, outline=BLACK)


def tick_labels(values: Sequence[float]) -> list[str]:
    """Short labels, with more significant digits only when fewer would make neighbours look equal."""
    for digits in (4, 6, 8, 12):
        labels = [f"{v:.{digits}g}" for v in values]
        if len(set(labels)) == len(labels):
            return labels
    return labels


def _legend(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], entries: list[tuple[str, tuple]], font) -> None:
    """A framed legend in the top-right corner of the axes: a colour swatch and the name per entry."""
    if not entries:
        return
    line_h = max(_text_size(name, font)[1] for name, _ in entries) + 6
    width = max(_text_size(name, font)[0] for name, _ in entries) + 34
    right, top = box[2] - 8, box[1] + 8
    left = right - width
    draw.rectangle([left, top, right, top + line_h * len(entries) + 6], fill=WHITE, outline=BLACK)
    for i, (name, colour) in enumerate(entries):
        y = top + 4 + i * line_h
        draw.rectangle([left + 6, y + 2, left + 22, y + line_h - 6], fill=colour)
        draw.text((left + 28, y), name, fill=BLACK, font=font)


def _titles(image: Image.Image, box, title: str, xlabel: str, ylabel: str, font) -> None:
    draw = ImageDraw.Draw(image)
    if title:
        w, _ = _text_size(title, _font(14))
        draw.text(((image.width - w) / 2, 8), title, fill=BLACK, font=_font(14))
    if xlabel:
        w, _ = _text_size(xlabel, font)
        draw.text(((box[0] + box[2] - w) / 2, image.height - 20), xlabel, fill=BLACK, font=font)
    if ylabel:  # PIL has no rotated text: draw on a strip and rotate it
        w, h = _text_size(ylabel, font)
        strip = Image.new("RGB", (w + 4, h + 6), WHITE)
        ImageDraw.Draw(strip).text((2, 0), ylabel, fill=BLACK, font=font)
        strip = strip.rotate(90, expand=True)
        image.paste(strip, (4, int((box[1] + box[3] - strip.height) / 2)))


def _save(image: Image.Image, path) -> None:
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        image.save(path)


def line_plot(series: dict[str, tuple[Sequence[float], Sequence[float]]], path, title: str = "", xlabel: str = "",
              ylabel: str = "", log_y: bool = False) -> Image.Image:
    """Curves (name -> (xs, ys)) on shared axes with a legend; non-finite points (and y <= 0 on log_y) are skipped."""
    cleaned: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, (xs, ys) in series.items():
        x, y = np.asarray(xs, float), np.asarray(ys, float)
        keep = np.isfinite(x) & np.isfinite(y) & ((y > 0) if log_y else True)
        cleaned[name] = (x[keep], np.log10(y[keep]) if log_y else y[keep])
    all_x = np.concatenate([x for x, _ in cleaned.values()] + [np.zeros(0)])
    all_y = np.concatenate([y for _, y in cleaned.values()] + [np.zeros(0)])
    xlim = _padded_range(all_x.tolist() or [0.0], 0.02)
    ylim = _padded_range(all_y.tolist() or [0.0])
    image = Image.new("RGB", LINE_SIZE, WHITE)
    draw, font = ImageDraw.Draw(image), _font()
    box = (MARGIN["left"], MARGIN["top"], LINE_SIZE[0] - MARGIN["right"], LINE_SIZE[1] - MARGIN["bottom"])
    axes = _Axes(box, xlim, ylim)
    axes.draw_frame(draw, font, log_y=log_y)
    entries = []
    for i, (name, (x, y)) in enumerate(cleaned.items()):
        colour = PALETTE[i % len(PALETTE)]
        entries.append((name, colour))
        px, py = axes.px(x, y)
        points = list(zip(px.tolist(), py.tolist()))
        if len(points) > 1:
            draw.line(points, fill=colour, width=2, joint="curve")
        if len(points) <= 20:  # markers keep short series (and single points) visible
            for u, v in points:
                draw.ellipse([u - 3, v - 3, u + 3, v + 3], fill=colour)
    _legend(draw, box, entries, font)
    _titles(image, box, title, xlabel, ylabel + (" (log scale)" if log_y and ylabel else ""), font)
    _save(image, path)
    return image


def _to_numpy(points) -> np.ndarray:
    if hasattr(points, "detach"):  # a torch tensor, possibly on an accelerator
        points = points.detach().cpu().double().numpy()
    return np.asarray(points, dtype=float)


def _square_limits(points: list[np.ndarray], limits) -> tuple[tuple[float, float], tuple[float, float]]:
    """Equal-length x and y ranges (so a circle stays round): the data's box, or `limits`, widened to a square."""
    if limits is not None:
        xlo, xhi, ylo, yhi = map(float, limits)
    else:
        pooled = np.concatenate(points) if points else np.zeros((0, 2))
        pooled = pooled[np.isfinite(pooled).all(axis=1)]
        (xlo, xhi), (ylo, yhi) = (_padded_range(pooled[:, j].tolist() or [0.0]) for j in (0, 1))
    half = max(xhi - xlo, yhi - ylo) / 2
    cx, cy = (xlo + xhi) / 2, (ylo + yhi) / 2
    return (cx - half, cx + half), (cy - half, cy + half)


def scatter_plot(sets: dict[str, object], path, title: str = "", limits=None) -> Image.Image:
    """Overlaid 2-D point clouds (name -> (n, 2) array or tensor), equal aspect; limits = (xmin, xmax, ymin, ymax)."""
    points = [_to_numpy(p).reshape(-1, 2) for p in sets.values()]
    xlim, ylim = _square_limits(points, limits)
    image = Image.new("RGB", SCATTER_SIZE, WHITE)
    draw, font = ImageDraw.Draw(image), _font()
    side = min(SCATTER_SIZE[0] - MARGIN["left"] - MARGIN["right"], SCATTER_SIZE[1] - MARGIN["top"] - MARGIN["bottom"])
    box = (MARGIN["left"], MARGIN["top"], MARGIN["left"] + side, MARGIN["top"] + side)
    axes = _Axes(box, xlim, ylim)
    axes.draw_frame(draw, font)
    entries = []
    for i, (name, pts) in enumerate(zip(sets, points)):
        colour = PALETTE[i % len(PALETTE)]
        entries.append((name, colour))
        image = _draw_points(image, axes, pts, colour)
    draw = ImageDraw.Draw(image)
    draw.rectangle(box, outline=BLACK)
    _legend(draw, box, entries, font)
    _titles(image, box, title, "x", "y", font)
    _save(image, path)
    return image


def _draw_points(image: Image.Image, axes: _Axes, pts: np.ndarray, colour: tuple, alpha: int = 150) -> Image.Image:
    """2x2-pixel translucent dots (vectorised: 100k points cost milliseconds), composited over the image."""
    pts = pts[np.isfinite(pts).all(axis=1)]
    px, py = axes.px(pts[:, 0], pts[:, 1])
    x0, y0, x1, y1 = axes.box
    layer = np.zeros((image.height, image.width, 4), np.uint8)
    for dx in (0, 1):
        for dy in (0, 1):
            u, v = np.floor(px).astype(int) + dx, np.floor(py).astype(int) + dy
            inside = (u > x0) & (u < x1) & (v > y0) & (v < y1)
            layer[v[inside], u[inside]] = (*colour, alpha)
    return Image.alpha_composite(image.convert("RGBA"), Image.fromarray(layer, "RGBA")).convert("RGB")


def _wrap(text: str, font, width: int, max_lines: int) -> list[str]:
    """Greedy word wrap to `width` pixels, cut to max_lines (the last line ends in '...' when cut)."""
    lines: list[str] = []
    for word in text.split():
        if lines and _text_size(lines[-1] + " " + word, font)[0] <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    cut = len(lines) > max_lines
    lines = lines[:max_lines]
    for i, line in enumerate(lines):  # a single word wider than the column, or the last kept line when cut
        ending = "..." if (cut and i == len(lines) - 1) or _text_size(line, font)[0] > width else ""
        while ending and line and _text_size(line + ending, font)[0] > width:
            line = line[:-1]
        lines[i] = line + ending
    return lines


def image_grid(images: Sequence[np.ndarray], rows: int, cols: int, path=None, row_labels: Sequence[str] | None = None,
               pad: int = 2, min_width: int = 256, label_width: int = 160) -> Image.Image:
    """Same-size (H, W, 3) uint8 images in a rows x cols grid, image k at row k // cols, column k % cols.

    Tiny images are upscaled by an integer factor (nearest neighbour, so pixels stay crisp) until the
    image part of the grid is at least `min_width` pixels wide; row labels (e.g. prompts) go on the left.
    """
    arrays = [np.asarray(im) for im in images]
    if not arrays or len(arrays) > rows * cols:
        raise ValueError(f"need 1..{rows * cols} images for a {rows}x{cols} grid, got {len(arrays)}")
    shape = arrays[0].shape
    if any(a.shape != shape or a.dtype != np.uint8 for a in arrays) or len(shape) != 3 or shape[2] != 3:
        raise ValueError("images must all be (H, W, 3) uint8 arrays of the same size")
    if row_labels is not None and len(row_labels) != rows:
        raise ValueError(f"got {len(row_labels)} row labels for {rows} rows")
    h, w = shape[:2]
    scale = max(1, math.ceil(min_width / (cols * w)))
    cell_w, cell_h = w * scale, h * scale
    font = _font()
    left = label_width + pad if row_labels is not None else 0
    grid = Image.new("RGB", (left + pad + cols * (cell_w + pad), pad + rows * (cell_h + pad)), WHITE)
    for k, array in enumerate(arrays):
        tile = Image.fromarray(array, "RGB").resize((cell_w, cell_h), Image.NEAREST)
        grid.paste(tile, (left + pad + (k % cols) * (cell_w + pad), pad + (k // cols) * (cell_h + pad)))
    if row_labels is not None:
        draw = ImageDraw.Draw(grid)
        line_h = _text_size("Ag", font)[1] + 4
        for r, label in enumerate(row_labels):
            lines = _wrap(str(label), font, label_width - 2 * pad, max(1, cell_h // line_h))
            top = pad + r * (cell_h + pad) + (cell_h - line_h * len(lines)) / 2
            for i, line in enumerate(lines):
                draw.text((pad, top + i * line_h), line, fill=BLACK, font=font)
    _save(grid, path)
    return grid
