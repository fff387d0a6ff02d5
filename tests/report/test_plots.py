"""Figures: matplotlib line and scatter plots written at their size with each series in its colour (smoothing,
log scale, equal aspect, limits), and the PIL image grid putting image k at row k // cols, column k % cols."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from flowspec.runtime.report.plots import PALETTE, image_grid, line_plot, scatter_plot, smoothed


def pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).astype(int)


def near(region: np.ndarray, colour, tol: int = 8) -> np.ndarray:
    return (np.abs(region - np.array(colour)) <= tol).all(-1)


def has_colour(region: np.ndarray, colour, tol: int = 8) -> int:
    return int(near(region, colour, tol).sum())


def dark_pixels(region: np.ndarray) -> int:
    return int((region.max(-1) < 100).sum())


def over_white(colour, alpha: float):
    return tuple(round(c * alpha + 255 * (1 - alpha)) for c in colour)


# -------------------------------------------------------------------------------------- line plot
def test_line_plot_writes_each_series_in_its_colour_at_its_size(tmp_path):
    path = tmp_path / "sub" / "loss.png"
    steps = np.arange(50)
    line_plot({"train": (steps, np.exp(-steps / 20)), "val": (steps[::10], np.exp(-steps[::10] / 15) + 0.1)},
              path, title="Loss", xlabel="step", ylabel="loss")
    img = pixels(path)
    assert img.shape == (400, 640, 3)
    assert all(has_colour(img, c) > 50 for c in PALETTE[:2])
    assert not has_colour(img, PALETTE[2])  # only as many colours as series
    assert has_colour(img[: 400 // 3, 640 // 2:], PALETTE[1]) >= 20  # the legend, top right


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=40), st.floats(0.0, 0.99))
def test_smoothing_is_the_exponential_average_with_its_start_up_bias_divided_out(values, weight):
    expected = [sum(weight ** (k - j) * (1 - weight) * values[j] for j in range(k + 1)) / (1 - weight ** (k + 1))
                for k in range(len(values))]
    assert smoothed(values, weight) == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert smoothed([values[0]] * len(values), weight) == pytest.approx([values[0]] * len(values))  # constant stays


def test_a_smoothed_curve_is_drawn_over_its_faint_raw_values(tmp_path):
    steps = np.arange(200)
    noisy = np.exp(-steps / 50) + 0.2 * np.random.default_rng(0).random(200)
    faint = over_white(PALETTE[0], 0.25)
    counts = []
    for smooth in (0.0, 0.9):
        line_plot({"loss": (steps, noisy)}, tmp_path / f"{smooth}.png", smooth=smooth)
        img = pixels(tmp_path / f"{smooth}.png")
        counts.append((has_colour(img, faint, tol=6), has_colour(img, PALETTE[0])))
    assert counts[1][0] > 5 * counts[0][0]  # the raw curve, faint, when smoothing (else anti-aliasing's few)
    assert counts[1][1] > 100  # the smoothed one in full colour


def test_line_plot_drops_non_finite_and_non_positive_values_on_log_scale(tmp_path):
    line_plot({"one": ([3.0], [2.0]), "flat": ([0, 1, 2], [5.0, 5.0, 5.0])}, tmp_path / "a.png")
    img = pixels(tmp_path / "a.png")
    assert has_colour(img, PALETTE[0]) >= 20 and has_colour(img, PALETTE[1]) > 50
    line_plot({"loss": ([0, 1, 2, 3, 4], [1.0, 0.0, float("nan"), 1e-3, 1e-4])}, tmp_path / "b.png", log_y=True)
    assert has_colour(pixels(tmp_path / "b.png"), PALETTE[0]) > 50


def test_line_plot_log_scale_spaces_decades_evenly(tmp_path):
    line_plot({"decades": ([0, 1, 2], [1.0, 10.0, 100.0])}, tmp_path / "log.png", log_y=True)
    mask = near(pixels(tmp_path / "log.png"), PALETTE[0])
    mask[: 400 // 3, 640 // 2:] = False  # not the legend
    cols = np.nonzero(mask.any(0))[0]
    left, right = cols.min() + 8, cols.max() - 8
    rows = [np.nonzero(mask[:, c])[0].mean() for c in (left, (left + right) // 2, right)]
    # Equal steps in log10(y) at equal steps in x make a straight line: the middle point halfway.
    assert rows[0] > rows[1] > rows[2] and abs((rows[0] + rows[2]) / 2 - rows[1]) < 3


# ----------------------------------------------------------------------------------- scatter plot
def test_scatter_plot_overlays_sets_with_a_legend(tmp_path):
    g = torch.Generator().manual_seed(0)
    data = torch.randn(2000, 2, generator=g)
    samples = (torch.randn(2000, 2, generator=g) + 3).numpy()
    scatter_plot({"data": data, "samples": samples}, tmp_path / "s.png", title="moons")
    img = pixels(tmp_path / "s.png")
    assert img.shape == (480, 480, 3)
    for colour in PALETTE[:2]:
        assert has_colour(img, over_white(colour, 0.6), tol=40) > 500  # the dots


def test_scatter_plot_keeps_equal_aspect_and_respects_limits(tmp_path):
    angle = torch.linspace(0, 2 * np.pi, 2000)
    circle = torch.stack([angle.cos(), angle.sin()], 1)
    wide = torch.stack([torch.linspace(-3, 3, 500), torch.full((500,), -1.5)], 1)  # data wider than tall, apart
    scatter_plot({"wide": wide, "circle": circle}, tmp_path / "c.png")
    mask = near(pixels(tmp_path / "c.png"), over_white(PALETTE[1], 0.6), tol=40)
    mask[: 480 // 4, 480 // 2:] = False  # not the legend
    rows, cols = np.nonzero(mask)
    height, width = rows.max() - rows.min(), cols.max() - cols.min()
    assert width > 60 and abs(height - width) <= 3, (height, width)  # the circle stays round
    # Points outside explicit limits are not drawn (only the legend shows their colour).
    scatter_plot({"inside": circle * 0.5, "outside": circle + 10}, tmp_path / "l.png", limits=(-1, 1, -1, 1))
    img = pixels(tmp_path / "l.png")
    img[: 480 // 4, 480 // 2:] = 255
    assert has_colour(img, over_white(PALETTE[0], 0.6), tol=40) > 100
    assert has_colour(img, over_white(PALETTE[1], 0.6), tol=40) == 0


# ------------------------------------------------------------------------------------- image grid
def coloured_images(count: int, size: int = 32) -> list[np.ndarray]:
    """Image k: a solid distinct colour with a black 8x16 (rows x columns) bar at its top left (shows orientation)."""
    images = []
    for k in range(count):
        im = np.zeros((size, size, 3), np.uint8)
        im[:] = (40 + 30 * k, 250 - 25 * k, 100 + 60 * (k % 3))
        im[:8, :16] = 0
        images.append(im)
    return images


@pytest.mark.parametrize("rows, cols, count", [(2, 3, 6), (3, 2, 5)])
def test_image_grid_places_image_k_at_row_k_div_cols_and_column_k_mod_cols(tmp_path, rows, cols, count):
    images = coloured_images(count)
    grid = image_grid(images, rows, cols, path=tmp_path / "g.png")
    arr = np.asarray(grid).astype(int)
    assert np.array_equal(pixels(tmp_path / "g.png"), arr)
    assert grid.width >= 256
    boxes = []
    for k, im in enumerate(images):
        ys, xs = np.nonzero((arr == im[-1, -1]).all(-1))
        top, left, bottom, right = ys.min(), xs.min(), ys.max() + 1, xs.max() + 1
        side = bottom - top
        assert side == right - left and side % 32 == 0 and side >= 64, "upscaled by an integer factor"
        assert side * side - len(ys) == (side // 4) * (side // 2), "one tile: solid apart from the corner bar"
        corner = arr[top:top + side // 4, left:left + side // 2]
        assert (corner == 0).all(), "image not flipped or transposed"
        boxes.append((top, left))
    tops, lefts = sorted({t for t, _ in boxes}), sorted({x for _, x in boxes})
    assert len(tops) == -(-count // cols) and len(lefts) == min(cols, count)
    for k, (top, left) in enumerate(boxes):
        assert (tops.index(top), lefts.index(left)) == (k // cols, k % cols)


def test_image_grid_row_labels_go_left_of_each_row():
    images = coloured_images(4)
    plain = image_grid(images, 2, 2)
    labelled = image_grid(images, 2, 2, row_labels=["a red circle", "a blue square above a green triangle " * 3])
    assert labelled.width > plain.width and labelled.height == plain.height
    arr = np.asarray(labelled).astype(int)
    first_tile_left = np.nonzero((arr == images[0][-1, -1]).all(-1))[1].min()
    half = labelled.height // 2
    assert dark_pixels(arr[:half, :first_tile_left]) > 20 and dark_pixels(arr[half:, :first_tile_left]) > 20
    assert dark_pixels(np.asarray(plain).astype(int)[:, :2]) == 0


def test_image_grid_rejects_bad_input():
    with pytest.raises(ValueError):
        image_grid(coloured_images(7), 2, 3)
    with pytest.raises(ValueError):
        image_grid(coloured_images(1) + coloured_images(1, size=16), 1, 2)
    with pytest.raises(ValueError):
        image_grid(coloured_images(2), 1, 2, row_labels=["a", "b"])
