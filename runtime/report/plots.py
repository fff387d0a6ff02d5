"""Figures: line and 2-D scatter plots with matplotlib (its Agg renderer, no display), image grids with PIL."""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# matplotlib's tab10: distinct, colour-blind friendly hues, familiar to readers of training curves.
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
WHITE, BLACK = (255, 255, 255), (0, 0, 0)
LINE_SIZE = (640, 400)
SCATTER_SIZE = (480, 480)
DPI = 100


def _font(size: int = 12) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap default font
        return ImageFont.load_default()


def _text_size(text: str, font) -> tuple[int, int]:
    left, top, right, bottom = font.getbbox(text or " ")
    return right - left, bottom - top


def _figure(size: tuple[int, int]):
    """A figure of `size` pixels, not registered with pyplot (no global state, no display needed)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI)


def _write(fig, path) -> None:
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=DPI)


def colour(i: int) -> tuple[float, float, float]:
    return tuple(c / 255 for c in PALETTE[i % len(PALETTE)])


def smoothed(values: Sequence[float], weight: float) -> np.ndarray:
    """Exponential moving average with its start-up bias divided out (TensorBoard's smoothing): point k is
    sum_j w^(k-j) (1 - w) y_j / (1 - w^(k+1))."""
    out, average, norm = np.empty(len(values)), 0.0, 0.0
    for k, value in enumerate(values):
        average, norm = weight * average + (1 - weight) * value, weight * norm + (1 - weight)
        out[k] = average / norm
    return out


def line_plot(series: dict[str, tuple[Sequence[float], Sequence[float]]], path, title: str = "", xlabel: str = "",
              ylabel: str = "", log_y: bool = False, smooth: float = 0.0) -> None:
    """Curves (name -> (xs, ys)) on shared axes with a legend; non-finite points (and y <= 0 on log_y) are
    skipped. smooth in (0, 1): each curve drawn faint as logged, and its smoothed version (`smoothed`) over it."""
    fig = _figure(LINE_SIZE)
    ax = fig.subplots()
    for i, (name, (xs, ys)) in enumerate(series.items()):
        x, y = np.asarray(xs, float), np.asarray(ys, float)
        keep = np.isfinite(x) & np.isfinite(y) & ((y > 0) if log_y else True)
        x, y = x[keep], y[keep]
        marker = "o" if len(x) <= 20 else None  # short series (and single points) stay visible
        if smooth > 0 and len(y) > 1:
            ax.plot(x, y, color=colour(i), alpha=0.25, linewidth=1)
            y = smoothed(y, smooth)
        ax.plot(x, y, color=colour(i), linewidth=2, marker=marker, markersize=4, label=name)
    if log_y:
        ax.set_yscale("log")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(True, color="0.9")
    ax.legend(loc="upper right")
    fig.tight_layout()
    _write(fig, path)


def _to_numpy(points) -> np.ndarray:
    if hasattr(points, "detach"):  # a torch tensor, possibly on an accelerator
        points = points.detach().cpu().double().numpy()
    return np.asarray(points, dtype=float)


def scatter_plot(sets: dict[str, object], path, title: str = "", limits=None) -> None:
    """Overlaid 2-D point clouds (name -> (n, 2) array or tensor), equal aspect (a circle stays round);
    limits = (xmin, xmax, ymin, ymax), points outside them not drawn."""
    fig = _figure(SCATTER_SIZE)
    ax = fig.subplots()
    for i, (name, points) in enumerate(sets.items()):
        pts = _to_numpy(points).reshape(-1, 2)
        pts = pts[np.isfinite(pts).all(axis=1)]
        ax.scatter(pts[:, 0], pts[:, 1], s=2, color=colour(i), alpha=0.6, linewidths=0, label=name)
    if limits is not None:
        ax.set_xlim(limits[0], limits[1])
        ax.set_ylim(limits[2], limits[3])
    ax.set_aspect("equal", adjustable="datalim" if limits is None else "box")
    ax.set(title=title, xlabel="x", ylabel="y")
    ax.legend(loc="upper right", markerscale=4)
    fig.tight_layout()
    _write(fig, path)


def _save(image: Image.Image, path) -> None:
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        image.save(path)


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
