"""The procedural shapes source: determinism, the complexity band, layout validity, rendering."""
import itertools
from collections import Counter

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowspec.runtime.data.shapes import (
    COLORS, NUM_CLASSES, SHAPES, SIZES, ShapeObject, ShapesDataset, ShapeScene, class_label, eval_captions,
    make_scene, render,
)
from flowspec.runtime.eval.checker import parse_caption
from flowspec.schemas.data import MAX_COMPLEXITY, Shapes

SIZES_HW = [(32, 32), (48, 64), (64, 32), (256, 256)]


def level_of(caption: str) -> int:
    """The level a caption's structure implies (the grammar in shapes.py's docstring)."""
    wanted = parse_caption(caption)
    first = wanted[0]
    if len(wanted) == 2:
        return 5
    if first.position:
        return 4
    if first.count > 1:
        return 3
    return 2 if first.size else 1


def pixel_boxes(scene: ShapeScene, height: int, width: int) -> list[tuple[float, float, float, float]]:
    boxes = []
    for obj in scene.objects:
        x, y, r = obj.cx * width, obj.cy * height, obj.radius(height, width)
        boxes.append((x - r, y - r, x + r, y + r))
    return boxes


def assert_valid_layout(scene: ShapeScene, height: int, width: int):
    boxes = pixel_boxes(scene, height, width)
    for x0, y0, x1, y1 in boxes:
        assert 0 <= x0 and x1 <= width and 0 <= y0 and y1 <= height, (scene, height, width)
    gap = 0.05 * min(height, width)  # the renderer promises clear space between object boxes
    for a, b in itertools.combinations(boxes, 2):
        apart_x = a[2] + gap <= b[0] or b[2] + gap <= a[0]
        apart_y = a[3] + gap <= b[1] or b[3] + gap <= a[1]
        assert apart_x or apart_y, (scene, height, width)


# ---------------------------------------------------------------------------------- determinism
def test_same_seed_and_index_give_identical_scene_caption_and_image():
    for index in range(10):
        a, b = make_scene(3, index, (1, 5)), make_scene(3, index, (1, 5))
        assert a == b
        for background in ("white", "black", "noise"):
            np.testing.assert_array_equal(render(a, 32, 48, background), render(b, 32, 48, background))


def test_different_index_or_seed_gives_different_scenes():
    scenes = [make_scene(3, i, (1, 5)) for i in range(50)]
    assert len({s.objects for s in scenes}) == 50
    assert len({s.caption for s in scenes}) > 30
    assert make_scene(4, 0, (1, 5)) != make_scene(3, 0, (1, 5))
    images = [render(s, 32, 32).tobytes() for s in scenes[:20]]
    assert len(set(images)) == 20


def test_dataset_items_are_pure_functions_of_seed_and_index():
    ds = ShapesDataset(Shapes(num_images=12, background="noise"), seed=7)
    assert len(ds) == 12
    a, b = ds.item(5, 32, 32, (2, 4)), ds.item(5, 32, 32, (2, 4))
    np.testing.assert_array_equal(a.image, b.image)
    assert a.caption == b.caption == a.scene.caption
    assert a.image.shape == (32, 32, 3) and a.image.dtype == np.uint8
    assert ShapesDataset(Shapes(num_images=12), seed=8).item(5, 32, 32, (2, 4)).scene != a.scene
    big = ds.item(5, 64, 48, (2, 4))  # another resolution: same scene, same caption
    assert big.scene == a.scene and big.image.shape == (64, 48, 3)
    with pytest.raises(IndexError):
        ds.item(12, 32, 32, (1, 1))


# ------------------------------------------------------------------------------------- levels
@pytest.mark.parametrize("band", [(1, 1), (2, 4), (1, 5), (5, 5), (3, 4)])
def test_levels_stay_inside_the_band_and_cover_it(band):
    lo, hi = band
    n = 300
    levels = Counter(make_scene(11, i, band).complexity for i in range(n))
    assert set(levels) == set(range(lo, hi + 1))
    for level in range(lo, hi + 1):  # roughly uniform: no level starved
        assert levels[level] > 0.6 * n / (hi - lo + 1), levels


@pytest.mark.parametrize("band", [(0, 2), (3, 2), (1, MAX_COMPLEXITY + 1)])
def test_bad_band_is_rejected(band):
    with pytest.raises(ValueError, match="complexity"):
        make_scene(0, 0, band)


@pytest.mark.parametrize("level", range(1, MAX_COMPLEXITY + 1))
def test_captions_parse_and_match_their_level(level):
    for i in range(60):
        scene = make_scene(2, i, (level, level))
        assert scene.complexity == level
        assert level_of(scene.caption) == level, scene.caption
        wanted = parse_caption(scene.caption)
        assert sum(e.count for e in wanted) == len(scene.objects)
        for e, obj in zip(wanted, scene.objects):  # the caption describes the drawn objects
            assert (e.color, e.shape) == (obj.color, obj.shape)
            assert e.size in (None, obj.size)


def test_each_level_asks_for_more_than_the_last():
    def attributes(level):
        seen = set()
        for i in range(100):
            for e in parse_caption(make_scene(0, i, (level, level)).caption):
                seen |= {"color", "shape"} | {k for k in ("size", "position", "relation") if getattr(e, k)}
                seen |= {"count"} if e.count > 1 else set()
        return seen
    previous = set()
    for level in range(1, MAX_COMPLEXITY + 1):
        current = attributes(level)
        assert current - previous, f"level {level} adds nothing over level {level - 1}"
        previous = current if level != 4 else current - {"position"}  # level 5 relates instead of placing


def test_level_four_objects_are_on_their_side():
    for i in range(100):
        scene = make_scene(1, i, (4, 4))
        side = parse_caption(scene.caption)[0].position
        for obj in scene.objects:
            assert {"left": obj.cx < 0.4, "right": obj.cx > 0.6, "top": obj.cy < 0.4, "bottom": obj.cy > 0.6}[side]


# ------------------------------------------------------------------------------------- layout
@pytest.mark.parametrize("height,width", SIZES_HW)
def test_objects_inside_the_image_and_apart(height, width):
    for level in range(1, MAX_COMPLEXITY + 1):
        for i in range(80):
            assert_valid_layout(make_scene(9, i, (level, level)), height, width)


@given(seed=st.integers(0, 2**32 - 1), index=st.integers(0, 10**9),
       band=st.tuples(st.integers(1, 5), st.integers(0, 4)).map(lambda t: (t[0], min(5, t[0] + t[1]))),
       hw=st.sampled_from(SIZES_HW[:3]))
def test_any_seed_and_index_give_a_valid_scene(seed, index, band, hw):
    scene = make_scene(seed, index, band)
    assert band[0] <= scene.complexity <= band[1]
    assert level_of(scene.caption) == scene.complexity
    assert_valid_layout(scene, *hw)
    assert len({(o.color, o.shape) for o in scene.objects}) == (2 if scene.complexity == 5 else 1)


# ------------------------------------------------------------------------------------ rendering
def test_render_draws_exact_colours_on_the_requested_background():
    scene = ShapeScene((ShapeObject("circle", "red", "large", 0.3, 0.3),
                        ShapeObject("triangle", "blue", "large", 0.7, 0.7)), "test", 5)
    for background, value in (("white", 255), ("black", 0)):
        img = render(scene, 64, 64, background)
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8
        assert (img[0] == value).all() and (img[:, -1] == value).all()
        assert tuple(img[19, 19]) == COLORS["red"]  # object centres carry the pure palette colour
        assert tuple(img[45, 45]) == COLORS["blue"]
    noise = render(scene, 64, 64, "noise")
    assert 5 < noise[:4].std() < 20 and 215 < noise[:4].mean() < 245  # light, visible noise
    other = ShapeScene(scene.objects[:1], "other", 1)
    assert not np.array_equal(render(other, 64, 64, "noise")[:4], noise[:4])  # seeded from the scene


def test_sizes_and_positions_scale_with_the_image():
    obj = ShapeObject("square", "green", "small", 0.25, 0.5)
    for height, width in ((32, 32), (32, 64), (64, 32)):
        img = render(ShapeScene((obj,), "a small green square", 2), height, width)
        ys, xs = np.nonzero((255 - img.astype(int)).max(-1) > 112)  # pixels at least half covered
        side = xs.max() - xs.min() + 1
        assert abs(side - 2 * SIZES["small"] * min(height, width)) <= 1.5  # short side sets the size
        assert abs(xs.mean() + 0.5 - 0.25 * width) <= 1 and abs(ys.mean() + 0.5 - 0.5 * height) <= 1


# ---------------------------------------------------------------------------- labels and eval set
def test_class_labels_cover_every_shape_colour_pair_once():
    labels = {class_label(ShapeScene((ShapeObject(s, c, "small", 0.5, 0.5),), "", 1)) for s in SHAPES for c in COLORS}
    assert labels == set(range(NUM_CLASSES)) and NUM_CLASSES == len(SHAPES) * len(COLORS)
    scene = make_scene(0, 3, (5, 5))  # the first object decides
    first = scene.objects[0]
    assert class_label(scene) == SHAPES.index(first.shape) * len(COLORS) + list(COLORS).index(first.color)


def test_eval_captions_are_fixed_balanced_and_distinct():
    captions = eval_captions(0, 50, (1, 5))
    assert captions == eval_captions(0, 50, (1, 5))
    assert captions != eval_captions(1, 50, (1, 5))
    assert len(captions) == 50 and len(set(captions)) == 50
    assert Counter(level_of(c) for c in captions) == {level: 10 for level in range(1, 6)}
    assert set(eval_captions(0, 30, (1, 1))) == {f"a {c} {s}" for c in COLORS for s in SHAPES}  # only 18 exist
