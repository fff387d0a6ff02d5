"""DreamBooth's prior half (runtime/objectives/dreambooth.py): each step pairs the subject rows with as many
class images, row i of step s's global batch of n being image (s * n + i) mod N, under the class prompt;
the class images themselves never change, whatever the training does to the batches it is given."""
import dataclasses

import torch
from hypothesis import given
from hypothesis import strategies as st

from flowspec.runtime.data.stream import Batch
from flowspec.runtime.objectives.dreambooth import DreamBooth


@dataclasses.dataclass
class Prior:
    """The two attributes prior_batch reads from the objective."""

    prior_images: torch.Tensor
    class_prompt: str = "a photo of a thing"


@given(count=st.integers(1, 12), total=st.integers(1, 16), steps=st.lists(st.integers(0, 10_000), min_size=1, max_size=4),
       data=st.data())
def test_prior_rows_cycle_through_the_class_images_which_never_change(count, total, steps, data):
    images = torch.randn(count, 3, 4, 4)
    kept = images.clone()
    prior = Prior(images)
    for step in steps:
        offset = data.draw(st.integers(0, total - 1))
        n = data.draw(st.integers(1, total - offset))
        batch = Batch(x=torch.zeros(n, 3, 4, 4), captions=["a sks thing"] * n, class_labels=None, height=4, width=4,
                      phase=0, offset=offset, total=total)
        out = DreamBooth.prior_batch(prior, batch, step)
        expected = [(step * total + offset + i) % count for i in range(n)]
        assert torch.equal(out.x, kept[expected])
        assert out.captions == [prior.class_prompt] * n and (out.height, out.width) == (4, 4)
        out.x.mul_(0).add_(7)  # whatever a step does to its batch in place
        assert torch.equal(images, kept)
