"""The shapes vocabulary the spec language knows (schemas/data.py SHAPES_WORDS) is every word captions use."""

from flowspec.runtime.data.shapes import eval_captions
from flowspec.schemas.data import SHAPES_WORDS


def test_every_caption_word_is_in_the_vocabulary_and_every_word_is_used():
    words = {w for seed in range(4) for c in eval_captions(seed, 400, (1, 5)) for w in c.split()}
    assert words == set(SHAPES_WORDS)
