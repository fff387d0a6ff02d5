"""train.global_batch = micro_batch x processes x accumulation, with what the spec fixes kept for any process count."""
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowspec.schemas.train import BatchSplitError, Train

sizes = st.integers(1, 64)
maybe = st.none() | st.integers(1, 16)


@given(sizes, st.integers(1, 8), maybe, maybe)
def test_a_split_multiplies_back_and_keeps_what_the_spec_fixes(global_batch, processes, micro, accumulation):
    train = Train(global_batch=global_batch, micro_batch=micro, accumulation=accumulation)
    try:
        got_micro, got_accumulation = train.split(processes)
    except BatchSplitError as exc:
        # refused only when no whole split keeps the fixed values
        fixed = [(m, a) for m in range(1, global_batch + 1) for a in range(1, global_batch + 1)
                 if m * processes * a == global_batch and micro in (None, m) and accumulation in (None, a)]
        if micro is None and accumulation is None:
            assert global_batch % processes, fixed
        else:
            assert not fixed, (fixed, str(exc))
        assert exc.key in ("global_batch", "micro_batch", "accumulation")
        return
    assert got_micro * processes * got_accumulation == global_batch
    assert micro in (None, got_micro) and accumulation in (None, got_accumulation)
    if micro is None and accumulation is None:
        assert (got_micro, got_accumulation) == (global_batch // processes, 1)  # no accumulation unless asked


@pytest.mark.parametrize("processes,expected", [(1, (2, 4)), (2, (1, 4))])
def test_an_explicit_accumulation_is_what_runs_under_any_process_count(processes, expected):
    """The accumulation a spec gives is honoured (it used to be recomputed from the process count and dropped)."""
    assert Train(global_batch=8, accumulation=4).split(processes) == expected


def test_an_accumulation_that_cannot_hold_names_the_key():
    with pytest.raises(BatchSplitError) as caught:
        Train(global_batch=8, accumulation=4).split(4)
    assert caught.value.key == "accumulation"
    assert str(caught.value) == "global_batch 8 does not split into 4 process(es) x accumulation 4 (micro-batches of 0.5 samples)"
