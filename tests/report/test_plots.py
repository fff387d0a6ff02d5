"""PIL figures: written to disk at the expected size, not blank (series colours, legend, tick labels), and the
image grid puts image k at row k // cols, column k % cols."""
import numpy as np
import pytest
import torch
from flowspec.runtime.report.plots import PALETTE, image_grid, line_plot, scatter_plot
from PIL import Image


def pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).astype(int)


def has_colour(region: np.ndarray, colour, tol: int = 0) -> int:
    """How many pixels of region are within tol of colour in every channel."""
    return int((np.abs(region - np.array(colour)) <= tol).all(-1).sum())


def dark_pixels(region: np.ndarray) -> int:
    return int((region.max(-1) < 100).sum())


# -------------------------------------------------------------------------------------- line plot
def test_line_plot_writes_a_labelled_figure(tmp_path):
    path = tmp_path / "sub" / "loss.png"
    steps = np.arange(50)
    line_plot({"train": (steps, np.exp(-steps / 20)), "val": (steps[::10], np.exp(-steps[::10] / 15) + 0.1)},
              path, title="Loss", xlabel="step", ylabel="loss")
    img = pixels(path)
    assert img.shape == (400, 640, 3)
    h, w, _ = img.shape
    for colour in PALETTE[:2]:  # the two series, in distinct colours
        assert has_colour(img, colour) > 50
    assert not has_colour(img, PALETTE[2])  # only as many colours as series
    # The legend sits in the top-right corner of the axes: both swatches and its text are there.
    legend = img[: h // 3, w // 2:]
    assert all(has_colour(legend, c) >= 40 for c in PALETTE[:2])
    assert dark_pixels(legend) > 30
    # Tick labels left of the axes and below them, the y label at the far left.
    assert dark_pixels(img[40:-60, 10:60]) > 50
    assert dark_pixels(img[-45:-25, 80:-20]) > 50
    assert dark_pixels(img[:25, :]) > 10  # title


def test_line_plot_handles_single_points_constant_series_and_log_scale(tmp_path):
    line_plot({"one": ([3.0], [2.0]), "flat": ([0, 1, 2], [5.0, 5.0, 5.0])}, tmp_path / "a.png")
    img = pixels(tmp_path / "a.png")
    assert has_colour(img, PALETTE[0]) >= 20 and has_colour(img, PALETTE[1]) > 50
    # log_y: non-positive and non-finite values are dropped instead of breaking the axes.
    line_plot({"loss": ([0, 1, 2, 3, 4], [1.0, 0.0, float("nan"), 1e-3, 1e-4])}, tmp_path / "b.png", log_y=True)
    assert has_colour(pixels(tmp_path / "b.png"), PALETTE[0]) > 50


def test_line_plot_log_scale_spaces_decades_evenly(tmp_path):
    xs = [0, 1, 2]
    line_plot({"decades": (xs, [1.0, 10.0, 100.0])}, tmp_path / "log.png", log_y=True)
    img = pixels(tmp_path / "log.png")
    ys = [np.nonzero(has_colour_mask(img[:, c], PALETTE[0]))[0].mean() for c in (150, 275, 400)]
    # Equal steps in log10(y) at equal steps in x make a straight line: the middle point halfway.
    assert ys[0] > ys[1] > ys[2] and abs((ys[0] + ys[2]) / 2 - ys[1]) < 3


def has_colour_mask(column: np.ndarray, colour) -> np.ndarray:
    return (column == np.array(colour)).all(-1)


# ----------------------------------------------------------------------------------- scatter plot
def blended(colour, alpha=150):
    """A dot's colour over white (the dots are drawn translucent)."""
    return tuple(round(c * alpha / 255 + 255 * (1 - alpha / 255)) for c in colour)


def test_scatter_plot_overlays_sets_with_a_legend(tmp_path):
    g = torch.Generator().manual_seed(0)
    data = torch.randn(2000, 2, generator=g)
    samples = (torch.randn(2000, 2, generator=g) + 3).numpy()
    scatter_plot({"data": data, "samples": samples}, tmp_path / "s.png", title="moons")
    img = pixels(tmp_path / "s.png")
    assert img.shape == (480, 480, 3)
    for colour in PALETTE[:2]:
        assert has_colour(img, blended(colour), tol=2) > 500  # the dots
        assert has_colour(img[: 480 // 3, 480 // 2:], colour) >= 40  # the legend swatch, top right
    assert dark_pixels(img[40:-60, 10:65]) > 30  # y tick labels


def test_scatter_plot_keeps_equal_aspect_and_respects_limits(tmp_path):
    angle = torch.linspace(0, 2 * np.pi, 2000)
    circle = torch.stack([angle.cos(), angle.sin()], 1)
    wide = torch.stack([torch.linspace(-3, 3, 500), torch.zeros(500)], 1)  # data three times wider than tall
    scatter_plot({"wide": wide, "circle": circle}, tmp_path / "c.png")
    mask = np.abs(pixels(tmp_path / "c.png") - np.array(blended(PALETTE[1]))).max(-1) <= 2
    rows, cols = np.nonzero(mask)
    height, width = rows.max() - rows.min(), cols.max() - cols.min()
    assert width > 60 and abs(height - width) <= 2, (height, width)  # the circle stays round
    # Points outside explicit limits are not drawn (only the legend swatch shows the colour).
    scatter_plot({"inside": circle * 0.5, "outside": circle + 10}, tmp_path / "l.png", limits=(-1, 1, -1, 1))
    img = pixels(tmp_path / "l.png")
    assert has_colour(img, blended(PALETTE[0]), tol=2) > 100
    assert has_colour(img, blended(PALETTE[1]), tol=2) == 0


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
