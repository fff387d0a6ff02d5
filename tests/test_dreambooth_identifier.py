"""A DreamBooth identifier must be a new word to the text encoder: for the builtin encoder (words hashed to
tokens), neither a word of its captions or prompts nor a word sharing one's token. Checked at validate time."""
import itertools
import random
import zlib

import pytest

from flowspec.compiler import SpecError, compile_spec
from flowspec.schemas.data import SHAPES_WORDS

SPEC = """\
flowspec: 1
name: db
model: {kind: mmdit, preset: tiny, latent: {kind: pixel}, text_encoder: {kind: builtin},
        config: {in_channels: 3, out_channels: 3}}
data: {source: {kind: SOURCE, PATH}, curriculum: [{at_step: 0, resolution: 16}]}
stages:
  - {name: pretrain, kind: pretrain, steps: 4}
  - {name: subject, kind: dreambooth, from: pretrain, steps: 4, instance_data: {kind: imagefolder, path: subject},
     identifier: ID, instance_prompt: "a photo of ID thing", prior: {class_prompt: "a photo of a thing"}}
"""


def errors(tmp_path, identifier: str, source: str = "shapes") -> str:
    path = "num_images: 8" if source == "shapes" else "path: photos"
    (tmp_path / "spec.yaml").write_text(SPEC.replace("ID", identifier).replace("SOURCE", source).replace("PATH", path))
    try:
        compile_spec(str(tmp_path / "spec.yaml"))
    except SpecError as exc:
        return "\n".join(str(i) for i in exc.issues)
    return ""


def token(word: str) -> int:  # the builtin encoder's hashing, written out here
    return 2 + zlib.crc32(word.encode()) % 4094


def test_a_word_of_the_shapes_captions_or_the_prompts_is_refused_at_the_identifier(tmp_path):
    assert errors(tmp_path, "sks") == ""
    found = errors(tmp_path, "blue")
    assert "spec.yaml:9:" in found and "stages.subject.identifier: the identifier 'blue' is a word of the shapes" in found
    assert errors(tmp_path, "blue", source="imagefolder") == ""  # photos: 'blue' is no known word of theirs


@pytest.mark.parametrize("source", ["shapes", "imagefolder"])
def test_a_word_sharing_a_known_words_token_is_refused(tmp_path, source):
    """Known: the shapes captions' words (shapes data) and the prompts' words."""
    prompts = {"a", "photo", "of", "thing"}
    known = {token(w): w for w in (SHAPES_WORDS | prompts if source == "shapes" else prompts)}
    clash = next(w for w in (f"q{i}" for i in itertools.count()) if token(w) in known)
    found = errors(tmp_path, clash, source)
    assert f"the identifier '{clash}' shares the builtin text encoder's token {token(clash)} with " \
           f"'{known[token(clash)]}'" in found


def test_the_subject_grid_rows_are_the_instance_prompt_the_new_contexts_and_the_plain_class_prompt(tmp_path):
    (tmp_path / "spec.yaml").write_text(SPEC.replace("ID", "sks").replace("SOURCE", "shapes").replace(
        "PATH", "num_images: 8").replace("steps: 4, instance_data", "steps: 4, validation_prompts: "
                                          "['a sks thing on the moon'], instance_data"))
    stage = compile_spec(str(tmp_path / "spec.yaml")).spec_stage("subject")
    assert stage.validation_prompts_grid() == ("a photo of sks thing", "a sks thing on the moon", "a photo of a thing")
    plain = stage.model_copy(update={"prior": None, "validation_prompts": []})
    assert plain.validation_prompts_grid() == ("a photo of sks thing", "a photo of thing")


def test_a_validation_prompt_without_the_identifier_is_refused_at_its_line(tmp_path):
    (tmp_path / "spec.yaml").write_text(SPEC.replace("ID", "sks").replace("SOURCE", "shapes").replace(
        "PATH", "num_images: 8").replace("steps: 4, instance_data", "steps: 4, validation_prompts: "
                                          "['a sks thing', 'a thing on the moon'], instance_data"))
    with pytest.raises(SpecError) as exc:
        compile_spec(str(tmp_path / "spec.yaml"))
    assert "validation_prompts[1] 'a thing on the moon' does not contain the identifier 'sks'" in str(exc.value)


# Pretrained encoders: the identifier read by the encoder's own tokenizer.json (schemas/vocabulary.py).
PRETRAINED = SPEC.replace("text_encoder: {kind: builtin}", "text_encoder: ENCODER").replace(
    "SOURCE", "imagefolder").replace("PATH", "path: photos")


def pretrained_errors(tmp_path, identifier: str, encoder: str) -> tuple[str, tuple]:
    (tmp_path / "spec.yaml").write_text(PRETRAINED.replace("ID", identifier).replace("ENCODER", encoder))
    try:
        plan = compile_spec(str(tmp_path / "spec.yaml"))
    except SpecError as exc:  # (the model's widths do not fit these encoders': not what is checked here)
        mine = [i for i in exc.issues if i.path.endswith(".identifier")]
        return ("\n".join(str(i) for i in mine if i.severity == "error"),
                tuple(str(i) for i in mine if i.severity == "warning"))
    return "", tuple(str(w) for w in plan.warnings)


def clip_like(folder):
    """A CLIP-style BPE tokenizer (end-of-word suffix) trained on Zipf-distributed words: 'dog' the most
    frequent, 'qxyz' the rarest; merges, and so token numbers, follow frequency as in CLIP's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    rng = random.Random(0)
    words = ["dog", *("".join(rng.choices("abcdefghijklmnoprstuvw", k=rng.randint(4, 6))) for _ in range(1500)), "qxyz"]
    corpus = [w for i, w in enumerate(words) for _ in range(max(1, 3000 // (i + 1)))]
    rng.shuffle(corpus)
    tok = Tokenizer(models.BPE(unk_token="<|unk|>", end_of_word_suffix="</w>"))
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.Whitespace(), decoders.BPEDecoder(suffix="</w>")
    tok.train_from_iterator([" ".join(corpus[i:i + 20]) for i in range(0, len(corpus), 20)], trainers.BpeTrainer(
        vocab_size=4000, special_tokens=["<|unk|>"], end_of_word_suffix="</w>", show_progress=False))
    folder.mkdir()
    tok.save(str(folder / "tokenizer.json"))
    return folder


def t5_like(folder):
    """A SentencePiece-unigram tokenizer as T5 stores one: pieces in score order, the most likely first."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    rng = random.Random(0)
    filler = {"".join(rng.choices("abcdefghijklmnoprstuvw", k=4)) for _ in range(200)}
    pieces = ["▁dog", "▁a", "▁photo", "▁of", "▁thing", *(f"▁{w}" for w in sorted(filler)), "▁qxyz"]
    vocab = [("<unk>", 0.0), ("▁", -1.0), *((p, -3.0 - i / 100) for i, p in enumerate(pieces)),
             *((c, -30.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789")]
    tok = Tokenizer(models.Unigram(vocab, unk_id=0))
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.Metaspace(), decoders.Metaspace()
    folder.mkdir()
    tok.save(str(folder / "tokenizer.json"))
    return folder


@pytest.mark.parametrize("kind", ["minilm", "clip", "t5"])
def test_a_pretrained_tokenizer_must_read_the_identifier_as_one_rare_token(tmp_path, kind):
    encoder = "{kind: minilm}"
    if kind != "minilm":
        folder = (clip_like if kind == "clip" else t5_like)(tmp_path / kind)
        encoder = f"{{kind: {kind}, path: {folder}}}"
    common, found = pretrained_errors(tmp_path, "dog", encoder)
    assert f"stages.subject.identifier: the identifier 'dog' is a common word to the {kind} tokenizer" in common
    assert "spec.yaml:9:" in common and "pick a rare token, e.g. '" in common
    unknown, _ = pretrained_errors(tmp_path, "⛄", encoder)
    assert f"the identifier '⛄' is unknown to the {kind} tokenizer" in unknown
    errors_, warnings = pretrained_errors(tmp_path, "sks", encoder)  # read as pieces: a warning
    assert errors_ == "" and any("warning: stages.subject.identifier: the identifier 'sks' is" in w for w in warnings)
    if kind != "minilm":
        assert pretrained_errors(tmp_path, "qxyz", encoder) == ("", ())  # the rarest word: one token, no note


def test_an_encoder_folder_without_tokenizer_json_is_not_checked(tmp_path):
    (tmp_path / "clip").mkdir()
    assert pretrained_errors(tmp_path, "dog", f"{{kind: clip, path: {tmp_path / 'clip'}}}") == ("", ())
