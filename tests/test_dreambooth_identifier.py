"""A DreamBooth identifier must be a new word to the text encoder: for the builtin encoder (words hashed to
tokens), neither a word of its captions or prompts nor a word sharing one's token. Checked at validate time."""
import itertools
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
