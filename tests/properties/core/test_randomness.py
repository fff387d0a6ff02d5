"""Properties of core/randomness: a micro-batch's draws are its rows of the global batch's draws,
whatever the cut into ranks x accumulation micro-batches (what makes `--nproc N` equal 1 process)."""
import pytest
import torch
from flowspec.runtime.core import TimestepDistribution, condition_dropout_mask
from flowspec.runtime.core.randomness import GLOBAL_DRAW_LIMIT, SliceRandom
from flowspec.schemas.timesteps import Timesteps
from hypothesis import given
from hypothesis import strategies as st

from ..strategies import seeds


@st.composite
def cuts(draw):
    """(world, accumulation, micro size): a global batch of world x accumulation x size items."""
    return draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 5))


def slices(seed: int, step: int, world: int, accumulation: int, size: int):
    total = world * accumulation * size
    for micro in range(accumulation):
        for rank in range(world):
            # the order of runtime/data/epochs.split: slice number micro x world + rank
            yield SliceRandom(seed, step, (micro * world + rank) * size, size, total)


@given(seeds, st.integers(0, 10**6), cuts(), st.integers(1, 3), st.sampled_from([GLOBAL_DRAW_LIMIT, 0]))
def test_noise_rows_do_not_depend_on_the_cut(seed, step, cut, channels, limit):
    """Both ways of drawing: the whole global batch sliced, and (limit 0) one generator per item."""
    world, accumulation, size = cut
    total = world * accumulation * size
    expected = SliceRandom(seed, step, 0, total, total, limit).randn("noise", (total, channels, 2))
    parts = [SliceRandom(seed, step, part.offset, size, total, limit).randn("noise", (size, channels, 2))
             for part in slices(seed, step, world, accumulation, size)]
    assert torch.equal(torch.cat(parts), expected)


@given(seeds, st.integers(0, 10**6), cuts())
def test_timesteps_and_dropout_rows_do_not_depend_on_the_cut(seed, step, cut):
    world, accumulation, size = cut
    total = world * accumulation * size
    dist = TimestepDistribution.from_spec(Timesteps.model_validate({"sampler": {"kind": "logit_normal"}}))
    whole = SliceRandom(seed, step, 0, total, total)
    t_all = whole.draw("t", lambda n, g: dist.draw(n, g, 32, 32, 64)).t
    drop_all = whole.draw("dropout", lambda n, g: condition_dropout_mask(n, 0.3, g))
    t_parts, drop_parts = [], []
    for part in slices(seed, step, world, accumulation, size):
        t_parts.append(part.rows(part.draw("t", lambda n, g: dist.draw(n, g, 32, 32, 64)).t))
        drop_parts.append(part.rows(part.draw("dropout", lambda n, g: condition_dropout_mask(n, 0.3, g))))
    assert torch.equal(torch.cat(t_parts), t_all) and torch.equal(torch.cat(drop_parts), drop_all)


@given(seeds, st.integers(0, 10**6))
def test_streams_differ_by_step_and_name(seed, step):
    a = SliceRandom(seed, step, 0, 16, 16)
    b = SliceRandom(seed, step + 1, 0, 16, 16)
    assert not torch.equal(a.randn("noise", (16, 4)), b.randn("noise", (16, 4)))
    assert not torch.equal(a.randn("noise", (16, 4)), a.randn("posterior", (16, 4)))
    assert torch.equal(a.randn("noise", (16, 4)), SliceRandom(seed, step, 0, 16, 16).randn("noise", (16, 4)))


def test_rows_outside_the_global_batch_are_refused():
    with pytest.raises(ValueError, match="do not lie"):
        SliceRandom(0, 0, 6, 4, 8)
    with pytest.raises(ValueError, match="rows"):
        SliceRandom(0, 0, 0, 4, 8).randn("noise", (3, 2))
