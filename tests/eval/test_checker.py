"""The procedural checker: it parses the grammar, accepts the renderer's images (clean and mildly
degraded, square and not) and rejects images that show something else."""
from collections import defaultdict

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image, ImageDraw, ImageFilter

from flowspec.runtime.data.shapes import COLORS, SHAPES, ShapeObject, ShapeScene, eval_captions, make_scene, render
from flowspec.runtime.eval.checker import (
    Expectation, accuracy, attribute_accuracy, chance_accuracy, check, detect, parse_caption,
)

LEVELS = range(1, 6)
BACKGROUNDS = ("white", "black", "noise")
SWAPS = {"small": "large", "large": "small", "two": "three", "three": "two", "left": "right", "right": "left",
         "top": "bottom", "bottom": "top", "above": "below", "below": "above"}


def degrade(image: np.ndarray, seed: int, radius: float = 0.8, std: float = 8.0) -> np.ndarray:
    """Gaussian blur then additive noise: roughly what a decent generator's output looks like."""
    blurred = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius)), dtype=np.float64)
    noisy = blurred + np.random.default_rng(seed).normal(0.0, std, blurred.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def level_accuracy(level: int, n: int, height: int, width: int, degraded: bool = False) -> float:
    images, captions = [], []
    for i in range(n):
        scene = make_scene(100 + level, i, (level, level))
        image = render(scene, height, width, BACKGROUNDS[i % 3])
        images.append(degrade(image, i) if degraded else image)
        captions.append(scene.caption)
    return accuracy(images, captions)


def mutations(caption: str) -> dict[str, str]:
    """One wrong caption per attribute the caption states: another colour, shape, size, count, side, relation."""
    words, out = caption.split(), {}
    colors = list(COLORS)
    for i, word in enumerate(words):
        singular = word[:-1] if word[:-1] in SHAPES else word
        if word in colors:
            new, kind = colors[(colors.index(word) + 1) % len(colors)], "color"
        elif singular in SHAPES:
            new, kind = SHAPES[(SHAPES.index(singular) + 1) % len(SHAPES)] + word[len(singular):], "shape"
        elif word in SWAPS:
            new = SWAPS[word]
            kind = {"small": "size", "large": "size", "two": "count", "three": "count",
                    "above": "relation", "below": "relation"}.get(word, "relation" if "of" in words else "position")
        else:
            continue
        wrong = " ".join(words[:i] + [new] + words[i + 1:])
        try:
            parse_caption(wrong)
        except ValueError:  # e.g. a relation between two identical objects: not a caption
            continue
        out.setdefault(kind, wrong)
    if words[0] == "a" and "of" not in words and len(words) > 2 and words[-2] == "the":  # level 4: a -> two
        out.setdefault("count", " ".join(["two"] + words[1:3] + [words[3] + "s"] + words[4:]))
    return out


# --------------------------------------------------------------------------------------- parsing
def test_parse_caption_for_every_level():
    assert parse_caption("a red circle") == [Expectation("red", "circle", 1)]
    assert parse_caption("a small red circle") == [Expectation("red", "circle", 1, "small")]
    assert parse_caption("three large blue squares") == [Expectation("blue", "square", 3, "large")]
    assert parse_caption("two small cyan triangles at the top") == [
        Expectation("cyan", "triangle", 2, "small", position="top")]
    assert parse_caption("A large yellow circle on the left.") == [
        Expectation("yellow", "circle", 1, "large", position="left")]
    assert parse_caption("a small red circle to the right of a large green square") == [
        Expectation("red", "circle", 1, "small", relation="right of", anchor=1),
        Expectation("green", "square", 1, "large")]


@pytest.mark.parametrize("caption,message", [
    ("a pink circle", "unknown word 'pink'.*a size or colour.*red"),
    ("a small red hexagon", "unknown word 'hexagon'.*shape.*circle"),
    ("four red circles", "unknown word 'four'.*number"),
    ("two red circle", "unknown word 'circle'.*plural shape"),
    ("a red circles", "unknown word 'circles'.*a shape"),
    ("", "caption ends"),
    ("a red", "caption ends.*shape"),
    ("a red circle in the middle", "unexpected 'in the middle'.*on the left"),
    ("two red circles above a blue square", "unexpected 'above a blue square'.*single object"),
    ("a red circle above a red circle", "two different objects"),
    ("a red circle above a blue square please", "unexpected 'please' at the end"),
])
def test_parse_caption_errors_are_clear(caption, message):
    with pytest.raises(ValueError, match=message):
        parse_caption(caption)


def test_every_generated_caption_parses():
    for caption in eval_captions(0, 200, (1, 5)):
        parse_caption(caption)


# ---------------------------------------------------------------------------- accepting the truth
@pytest.mark.parametrize("level", LEVELS)
def test_accepts_clean_renders_at_32(level):
    assert level_accuracy(level, 300, 32, 32) >= 0.97


@pytest.mark.parametrize("height,width", [(64, 64), (48, 64), (64, 32)])
def test_accepts_clean_renders_at_other_sizes(height, width):
    for level in LEVELS:
        assert level_accuracy(level, 60, height, width) >= 0.97, level


@pytest.mark.parametrize("height,width,n", [(32, 32, 200), (32, 64, 60), (64, 48, 60)])
def test_accepts_mildly_degraded_renders(height, width, n):
    for level in LEVELS:
        assert level_accuracy(level, n, height, width, degraded=True) >= 0.9, level


def test_accepts_large_renders():
    scenes = [make_scene(5, i, (level, level)) for level in LEVELS for i in range(2)]
    assert accuracy([render(s, 256, 256, "noise") for s in scenes], [s.caption for s in scenes]) == 1.0


@given(seed=st.integers(0, 2**32 - 1), index=st.integers(0, 10**9), background=st.sampled_from(BACKGROUNDS))
def test_accepts_any_scene(seed, index, background):
    scene = make_scene(seed, index, (1, 5))
    result = check(render(scene, 32, 32, background), scene.caption)
    assert result.correct, (scene, result)


def test_attribute_accuracy_reports_each_stated_attribute():
    scenes = [make_scene(8, i, (1, 5)) for i in range(100)]
    scores = attribute_accuracy([render(s, 32, 32) for s in scenes], [s.caption for s in scenes])
    assert set(scores) == {"color", "shape", "count", "size", "position", "relation"}
    assert min(scores.values()) >= 0.97


def test_detect_measures_what_was_drawn():
    obj = ShapeObject("triangle", "purple", "large", 0.3, 0.6)
    [found] = detect(render(ShapeScene((obj,), "a large purple triangle", 2), 64, 96, "black"))
    assert (found.color, found.shape, found.size) == ("purple", "triangle", "large")
    assert abs(found.cx - 0.3) < 0.02 and abs(found.cy - (0.6 + 0.18 * 64 / 3 / 64)) < 0.02  # centroid: r/3 low


# ---------------------------------------------------------------------------- rejecting the wrong
def test_rejects_images_of_a_different_caption():
    caught = defaultdict(list)
    for level in LEVELS:
        for i in range(40):
            scene = make_scene(200 + level, i, (level, level))
            height, width = ((32, 32), (32, 48), (48, 32))[i % 3]
            image = render(scene, height, width, BACKGROUNDS[i % 3])
            for kind, wrong in mutations(scene.caption).items():
                result = check(image, wrong)
                caught[kind].append(not result.correct)
                if level < 5:  # the attribute that changed is the one that fails
                    assert not result.checks[kind], (scene.caption, wrong, result)
    assert set(caught) == {"color", "shape", "size", "count", "position", "relation"}
    for kind, hits in caught.items():
        assert np.mean(hits) >= 0.98, (kind, np.mean(hits), len(hits))


def test_rejects_swapped_attributes_and_extra_objects():
    scene = make_scene(0, 0, (5, 5))
    a, b = scene.objects
    image = render(scene, 32, 32)
    swapped = f"a {a.size} {b.color} {a.shape} above a {b.size} {a.color} {b.shape}"
    if a.color != b.color:  # binding: right colours and shapes, on the wrong objects
        assert not check(image, swapped).correct
    only_first = check(image, f"a {a.size} {a.color} {a.shape}")
    assert not only_first.correct and not only_first.checks["count"]  # the second object is extra


@pytest.mark.parametrize("background", BACKGROUNDS)
def test_blank_image_fails_every_caption(background):
    blank = render(ShapeScene((), "", 1), 32, 32, background)
    assert detect(blank) == []
    for caption in eval_captions(1, 50, (1, 5)):
        result = check(blank, caption)
        assert not result.correct and not result.checks["color"] and not result.checks["shape"]


@pytest.mark.parametrize("draw", ["rectangle", "ellipse"])
def test_shapeless_smear_is_no_shape(draw):
    image = Image.new("RGB", (64, 64), "white")
    getattr(ImageDraw.Draw(image), draw)((10, 30, 45, 37), fill=COLORS["red"])  # 36 x 8: a bar, a flat ellipse
    [found] = detect(np.asarray(image))
    assert found.shape == "other"
    assert not check(np.asarray(image), "a red square").correct
    assert not check(np.asarray(image), "a red circle").correct


def test_specks_and_off_palette_colours_are_not_objects():
    scene = ShapeScene((ShapeObject("circle", "red", "large", 0.3, 0.3),), "a large red circle", 2)
    image = render(scene, 32, 32).copy()
    image[24:26, 24:26] = COLORS["blue"]  # a 2x2 speck of generator noise: ignored
    image[4:12, 18:26] = (90, 90, 90)  # a grey square: no palette colour, so no object
    image[20:28, 4:12] = (140, 90, 40)  # a brown one
    assert check(image, "a large red circle").correct
    assert [d.color for d in detect(image)] == ["red"]


def test_diagonally_touching_pixels_are_one_object():
    image = np.full((32, 32, 3), 255, np.uint8)
    image[8:16, 8:16] = image[16:24, 16:24] = COLORS["green"]  # two squares meeting at a corner
    assert len(detect(image)) == 1  # one blob (8-connected): it cannot pass for "two green squares"
    assert not check(image, "two small green squares").correct


def test_chance_is_far_below_the_renderer():
    assert chance_accuracy((1, 1), n=150) < 0.15  # about 1/18
    assert chance_accuracy((1, 5), n=150) < 0.05
    assert accuracy([np.full((32, 32, 3), 255, np.uint8)] * 5, eval_captions(0, 5, (1, 5))) == 0.0
