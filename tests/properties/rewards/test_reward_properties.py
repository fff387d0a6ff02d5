"""Reward invariants: toy2d_region is minus the distance to the union of its discs (closed form, 0 inside,
translation-invariant); the JPEG pair are each other's negatives; shapes_color is a share in [0, 1] that
never falls when the caption names more colours."""
import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from flowspec.runtime.data.shapes import COLORS
from flowspec.runtime.rewards import build_reward
from flowspec.schemas.rewards import Reward

from ..strategies import floats, seeds

BLOCK = TypeAdapter(Reward)
coords = floats(-5.0, 5.0)
centres = st.lists(st.tuples(coords, coords), min_size=1, max_size=4)


@settings(max_examples=60, deadline=None)
@given(centres, floats(0.0, 2.0), seeds, floats(-3.0, 3.0), floats(-3.0, 3.0))
def test_toy2d_region_is_minus_the_distance_to_the_discs(centers, radius, seed, dx, dy):
    x = torch.rand(16, 2, generator=torch.Generator().manual_seed(seed)) * 12 - 6
    region = build_reward(BLOCK.validate_python({"kind": "toy2d_region", "centers": centers, "radius": radius}))
    got = region.score(x, [""] * 16).numpy()
    c = np.asarray(centers)
    nearest = np.sqrt(((x.numpy()[:, None, :] - c[None]) ** 2).sum(-1)).min(1)
    assert np.allclose(got, -np.maximum(nearest - radius, 0.0), atol=1e-4)
    inside = torch.tensor(c, dtype=torch.float32)  # the centres themselves lie in the set
    assert region.score(inside, [""] * len(c)).abs().max().item() == 0.0
    moved = build_reward(BLOCK.validate_python({"kind": "toy2d_region", "centers": [(a + dx, b + dy) for a, b in centers],
                                                "radius": radius}))
    assert np.allclose(moved.score(x + torch.tensor([dx, dy]), [""] * 16).numpy(), got, atol=1e-4)


@settings(max_examples=20, deadline=None)
@given(seeds, st.integers(1, 100))
def test_jpeg_compressibility_is_minus_incompressibility(seed, quality):
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    plus = build_reward(BLOCK.validate_python({"kind": "jpeg_incompressibility", "quality": quality}))
    minus = build_reward(BLOCK.validate_python({"kind": "jpeg_compressibility", "quality": quality}))
    assert torch.equal(minus.score(images, ["", ""]), -plus.score(images, ["", ""]))


@settings(max_examples=30, deadline=None)
@given(seeds, st.sets(st.sampled_from(list(COLORS)), min_size=1), st.sampled_from(list(COLORS)), floats(0.02, 1.0))
def test_shapes_color_is_a_share_that_grows_with_the_colours_named(seed, named, extra, temperature):
    images = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    colour = build_reward(BLOCK.validate_python({"kind": "shapes_color", "temperature": temperature}))
    fewer = colour.score(images, [" ".join(sorted(named)) + " circle"] * 3)
    more = colour.score(images, [" ".join(sorted(named | {extra})) + " circle"] * 3)
    assert bool(((fewer >= 0) & (more <= 1)).all())
    assert bool((more >= fewer - 1e-6).all())
