"""Aspect buckets: geometry, nearest-bucket assignment (against a brute force), resize-to-cover and crop."""
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from flowspec.runtime.data.buckets import (
    Bucket, assign, cover_crop, cover_size, crop_offset, make_buckets, resize_to_cover,
)

# Mirror pairs (r, 1/r) make exact ties for square images; free floats cover the rest.
RATIOS = st.sampled_from([0.25, 0.5, 0.75, 1.0, 4 / 3, 2.0, 4.0]) | st.floats(0.1, 10.0)
MULTIPLES = st.sampled_from([1, 2, 8, 14, 16, 32, 64])
SIDES = st.integers(1, 20_000)  # includes 1 x 20000: extreme ratios


def brute_force_nearest(height, width, buckets):
    """Scan every bucket; keep the first strict improvement in |log(h/w) - log(bh/bw)|, compared exactly:
    |log x| orders like max(x, 1/x), with x = (h * bw) / (w * bh) as a fraction."""
    best, best_error = None, None
    for index, bucket in enumerate(buckets):
        x = Fraction(height * bucket.width, width * bucket.height)
        error = max(x, 1 / x)
        if best is None or error < best_error:
            best, best_error = index, error
    return best


@given(resolution=st.integers(16, 2048), ratios=st.lists(RATIOS, min_size=1, max_size=8), multiple=MULTIPLES,
       height=SIDES, width=SIDES, square=st.booleans())
def test_assign_is_the_nearest_bucket_in_log_ratio(resolution, ratios, multiple, height, width, square):
    width = height if square else width  # squares tie between mirror buckets
    buckets = make_buckets(resolution, ratios, multiple)
    chosen = assign(height, width, buckets)
    assert chosen == brute_force_nearest(height, width, buckets)
    # and, in plain floats, nothing is nearer in log ratio (catches a wrong distance, e.g. |h/w - r|)
    errors = [abs(math.log(height / width) - math.log(b.height / b.width)) for b in buckets]
    assert errors[chosen] <= min(errors) + 1e-12


def test_assign_ties_go_to_the_lower_index():
    tall, wide = Bucket(64, 32, 2.0), Bucket(32, 64, 0.5)
    assert assign(50, 50, (tall, wide)) == 0
    assert assign(50, 50, (wide, tall)) == 0
    assert assign(50, 50, (wide, Bucket(32, 64, 0.49), tall)) == 0  # identical shapes too


def test_assign_uses_the_actual_sides_not_the_requested_ratio():
    # 64x64 was requested as 1.3 (rounding made it square); an 80x64 image (1.25) is nearer to 96x64 (1.5)
    # in actual shape (log 1.2 < log 1.25) though nearer to 1.3 in requested ratio.
    buckets = (Bucket(64, 64, 1.3), Bucket(96, 64, 1.4))
    assert assign(80, 64, buckets) == 1


def test_assign_extreme_images_go_to_the_extreme_buckets():
    buckets = make_buckets(256, [0.25, 1.0, 4.0], 32)
    assert assign(1, 100_000, buckets) == 0
    assert assign(100_000, 1, buckets) == 2
    with pytest.raises(ValueError):
        assign(0, 10, buckets)
    with pytest.raises(ValueError):
        assign(10, 10, ())


@given(resolution=st.integers(1, 4096), ratios=st.lists(st.floats(0.05, 20.0), min_size=1, max_size=6),
       multiple=MULTIPLES)
def test_bucket_sides_are_multiples_and_keep_the_area(resolution, ratios, multiple):
    """Each side is the ideal side a = R sqrt(r) (b = R / sqrt(r)) rounded to the nearest multiple, so it is
    off by at most m/2, unless it was clamped up to one multiple (a < m/2). With |h - a|, |w - b| <= m/2 and
    ab = R^2: |hw - R^2| <= (m/2)(a + b) + m^2/4."""
    for bucket in make_buckets(resolution, ratios, multiple):
        assert bucket.height % multiple == 0 and bucket.width % multiple == 0
        a = resolution * math.sqrt(bucket.ratio)
        b = resolution / math.sqrt(bucket.ratio)
        for side, ideal in ((bucket.height, a), (bucket.width, b)):
            assert side >= multiple
            if ideal >= multiple / 2 + 1e-9:
                assert abs(side - ideal) <= multiple / 2 + 1e-9
            else:
                assert side == multiple
        if min(a, b) >= multiple / 2 + 1e-9:
            tolerance = multiple / 2 * (a + b) + multiple ** 2 / 4
            assert abs(bucket.height * bucket.width - resolution ** 2) <= tolerance + 1e-6


def test_make_buckets_collapses_equal_shapes_keeping_the_first():
    buckets = make_buckets(64, [1.1, 0.5, 1.0, 0.9], 32)  # 1.1, 1.0 and 0.9 all round to 64x64
    assert [(b.height, b.width, b.ratio) for b in buckets] == [(64, 64, 1.1), (32, 96, 0.5)]
    assert len({(b.height, b.width) for b in make_buckets(512, [0.5, 0.6, 0.75, 1, 4 / 3, 2], 64)}) == 6


@pytest.mark.parametrize("args", [(0, [1.0], 32), (64, [], 32), (64, [0.0], 32), (64, [-1.0], 32),
                                  (64, [float("nan")], 32), (64, [1.0], 0)])
def test_make_buckets_rejects_bad_arguments(args):
    with pytest.raises(ValueError):
        make_buckets(*args)


# ------------------------------------------------------------------------------ resize and crop
BUCKETS = st.builds(lambda r, ratio, m: make_buckets(r, [ratio], m)[0],
                    st.integers(16, 128), st.floats(0.25, 4.0), st.sampled_from([8, 16]))


@given(height=SIDES, width=SIDES, bucket=BUCKETS)
def test_cover_size_covers_the_bucket_minimally_and_keeps_the_aspect(height, width, bucket):
    h, w = cover_size(height, width, bucket)
    assert h >= bucket.height and w >= bucket.width
    assert h == bucket.height or w == bucket.width  # the tighter side fits exactly: no extra upscaling
    # only the other side is rounded up, by less than one pixel: |h*width - w*height| < max(height, width)
    assert abs(h * width - w * height) < max(height, width)


def test_cover_size_rounds_up():
    assert cover_size(3, 7, Bucket(4, 4, 1.0)) == (4, 10)  # 7 * 4/3 = 9.33 -> 10
    assert cover_size(187, 187, Bucket(48, 48, 1.0)) == (48, 48)  # in floats 187 * (48/187) = 48.00000000000001 -> 49


@pytest.mark.parametrize("spare", [(0, 0), (1, 0), (0, 3), (2, 5)])
def test_random_offsets_cover_exactly_the_valid_range(spare):
    bucket = Bucket(16, 24, 0.66)
    offsets = {crop_offset(16 + spare[0], 24 + spare[1], bucket, "random", np.random.default_rng(seed))
               for seed in range(200)}
    assert offsets == {(top, left) for top in range(spare[0] + 1) for left in range(spare[1] + 1)}
    with pytest.raises(ValueError):
        crop_offset(15, 24, bucket)  # the image must cover the bucket


@given(height=st.integers(1, 300), width=st.integers(1, 300), bucket=BUCKETS)
def test_the_resized_image_covers_the_bucket(height, width, bucket):
    resized = resize_to_cover(Image.new("RGB", (width, height), (10, 20, 30)), bucket)
    assert resized.width >= bucket.width and resized.height >= bucket.height
    assert (resized.height, resized.width) == cover_size(height, width, bucket)


def noise_image(height, width, seed=0, mode="RGB"):
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB").convert(mode)


@pytest.mark.parametrize("size", [(200, 100), (100, 300), (64, 64), (7, 500), (30, 20)])
@pytest.mark.parametrize("crop", ["center", "random"])
def test_cover_crop_has_exactly_the_bucket_shape(size, crop):
    bucket = make_buckets(64, [0.5], 16)[0]
    out = cover_crop(noise_image(*size), bucket, crop, np.random.default_rng(0))
    assert out.shape == (bucket.height, bucket.width, 3) and out.dtype == np.uint8


@pytest.mark.parametrize("size", [(200, 100), (100, 300)])  # tall: crops rows; wide: crops columns
def test_centre_crop_is_centred(size):
    height, width = size
    image = np.full((height, width, 3), 255, np.uint8)
    image[height // 2 - 6:height // 2 + 6, width // 2 - 6:width // 2 + 6] = (255, 0, 0)  # the marked centre
    bucket = Bucket(64, 64, 1.0)
    out = cover_crop(Image.fromarray(image), bucket, "center").astype(int)
    rows, cols = np.nonzero((out[..., 1] < 128) & (out[..., 0] > 128))
    assert len(rows) > 0
    # a top/left-aligned crop would put the marker 32 px off (tall) or 64 px off (wide) or cut it off
    assert abs(rows.mean() - (bucket.height - 1) / 2) <= 1.0
    assert abs(cols.mean() - (bucket.width - 1) / 2) <= 1.0


@pytest.mark.parametrize("crop", ["center", "random"])
def test_cover_crop_is_the_window_at_crop_offset_inside_the_resized_image(crop):
    image, bucket = noise_image(90, 240, seed=1), Bucket(48, 64, 0.75)
    resized = np.array(resize_to_cover(image, bucket))
    offsets = set()
    for seed in range(20):
        top, left = crop_offset(resized.shape[0], resized.shape[1], bucket, crop, np.random.default_rng(seed))
        assert 0 <= top <= resized.shape[0] - bucket.height and 0 <= left <= resized.shape[1] - bucket.width
        out = cover_crop(image, bucket, crop, np.random.default_rng(seed))
        np.testing.assert_array_equal(out, resized[top:top + bucket.height, left:left + bucket.width])
        offsets.add((top, left))
    if crop == "random":
        assert len(offsets) > 5  # varies with the rng: 64 spare columns, no spare rows
        assert len({left for _, left in offsets}) > 5
    else:
        assert offsets == {((resized.shape[0] - 48) // 2, (resized.shape[1] - 64) // 2)}


def test_random_crop_is_reproducible_and_needs_an_rng():
    image, bucket = noise_image(100, 300, seed=2), Bucket(64, 64, 1.0)
    first = cover_crop(image, bucket, "random", np.random.default_rng(7))
    np.testing.assert_array_equal(first, cover_crop(image, bucket, "random", np.random.default_rng(7)))
    with pytest.raises(ValueError):
        cover_crop(image, bucket, "random")
    with pytest.raises(ValueError):
        cover_crop(image, bucket, "middle")


def test_an_image_of_the_bucket_size_is_unchanged():
    image = noise_image(48, 64, seed=3)
    np.testing.assert_array_equal(cover_crop(image, Bucket(48, 64, 0.75)), np.array(image))


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "1", "CMYK", "I"])
def test_any_input_mode_gives_rgb(mode):
    bucket = Bucket(32, 48, 0.66)
    out = cover_crop(noise_image(40, 90, seed=4, mode=mode), bucket, "center")
    assert out.shape == (32, 48, 3) and out.dtype == np.uint8
    if mode in ("L", "LA", "1", "I"):
        assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()  # grey stays grey


def test_transparency_is_composited_over_white():
    image = np.zeros((40, 40, 4), np.uint8)  # black, fully transparent...
    image[:, :20, 3] = 255                   # ...except the left half, opaque black
    out = cover_crop(Image.fromarray(image, "RGBA"), Bucket(40, 40, 1.0))
    assert (out[:, :18] == 0).all() and (out[:, 22:] == 255).all()
