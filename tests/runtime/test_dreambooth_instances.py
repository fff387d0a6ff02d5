"""DreamBooth's subject images from a folder: with sidecar captions (each must name the identifier) or none
(every image takes the instance prompt); a bad folder is a positioned error naming the file; the folder's
contents are part of the stage's identity."""
import numpy as np
import pytest
from PIL import Image

from flowspec.compiler import compile_spec
from flowspec.runtime.data.sources import ImageFolder
from flowspec.runtime.data.stream import Batch
from flowspec.runtime.ops.dreambooth import CaptionedFeed, instance_source, lacking_identifier
from flowspec.schemas.data import ImageFolder as FolderBlock

from .helpers import TINY_IMAGE_MODEL, flowspec, write_spec

SPEC = """\
flowspec: 1
name: db
seed: 5
""" + TINY_IMAGE_MODEL + """\
data:
  source: {kind: shapes, num_images: 16}
  curriculum: [{at_step: 0, resolution: 16, complexity: [1, 1]}]
optimizer: {kind: adamw, lr: 1.0e-3}
train:
  global_batch: 2
  samples: {every: 100, num_steps: 2, per_prompt: 1, prompts: ["a red circle"]}
stages:
  - {name: pretrain, kind: pretrain, steps: 1}
  - name: subject
    kind: dreambooth
    from: pretrain
    steps: 1
    instance_data: {kind: imagefolder, path: subject}
    instance_prompt: "a photo of sks ring"
"""


def subject(folder, captions: dict[int, str] | None = None, count: int = 3):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    for i, text in (captions or {}).items():
        (folder / f"{i}.txt").write_text(text)
    return folder


def block(folder, captions: str = "auto"):
    return FolderBlock(kind="imagefolder", path=str(folder), captions=captions)


def test_a_folder_without_captions_takes_the_instance_prompt_and_one_with_captions_keeps_them(tmp_path):
    bare = subject(tmp_path / "bare")
    source, own = instance_source(block(bare))
    assert (source.captions, own) == ("none", False)
    assert [r.caption for r in ImageFolder(source).records] == ["", "", ""]
    captioned = subject(tmp_path / "captioned", {0: "sks ring", 1: "sks ring on a table", 2: "sks ring, close up"})
    assert instance_source(block(captioned)) == (block(captioned), True)
    assert instance_source(block(captioned, "none"))[1] is False  # asked for: the prompt, whatever lies beside


def test_own_captions_must_hold_the_identifier_as_a_word(tmp_path):
    folder = ImageFolder(block(subject(tmp_path / "s", {0: "sks ring", 1: "a ring", 2: "sksy ring"})))
    assert lacking_identifier(folder, "sks") == ["1.png", "2.png"]
    assert lacking_identifier(folder, "ring") == []


def test_the_feed_gives_the_instance_prompt_to_every_image_or_only_to_those_without_a_caption():
    class Feed:
        def batch(self, step, micro):
            return Batch(x=np.zeros((3, 1)), captions=["sks ring", "", "sks ring on sand"], class_labels=None,
                         height=1, width=1, phase=0)

    assert CaptionedFeed(Feed(), "a photo of sks ring").batch(0, 0).captions == ["a photo of sks ring"] * 3
    assert CaptionedFeed(Feed(), "a photo of sks ring", own=True).batch(0, 0).captions == [
        "sks ring", "a photo of sks ring", "sks ring on sand"]


def test_replacing_one_subject_image_makes_it_a_new_stage(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # data paths are relative to where flowspec runs
    folder = subject(tmp_path / "subject")
    path = write_spec(tmp_path, SPEC)
    first = compile_spec(str(path)).stage("subject").hash
    assert compile_spec(str(path)).stage("subject").hash == first
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(folder / "1.png")
    second = compile_spec(str(path)).stage("subject").hash
    assert second != first
    (folder / "1.txt").write_text("sks ring")
    assert compile_spec(str(path)).stage("subject").hash not in (first, second)
    assert compile_spec(str(path)).stage("pretrain").hash == compile_spec(str(path)).stage("pretrain").hash


@pytest.mark.parametrize("case, expected", [
    ("caption without identifier", "1 instance caption(s) in subject do not contain the identifier 'sks': 1.png"),
    ("unreadable image", "subject/3.png: cannot read the image"),
    ("empty folder", "image folder subject holds no images"),
])
def test_a_bad_subject_folder_is_refused_at_the_instance_data_line_naming_the_file(tmp_path, case, expected):
    if case == "caption without identifier":
        subject(tmp_path / "subject", {0: "sks ring", 1: "a ring", 2: "sks ring"})
    elif case == "unreadable image":
        subject(tmp_path / "subject")
        (tmp_path / "subject" / "3.png").write_text("not an image")
    else:
        (tmp_path / "subject").mkdir()
    write_spec(tmp_path, SPEC)
    out = flowspec("run", "spec.yaml", cwd=tmp_path)
    assert out.returncode != 0
    assert f"spec.yaml:23:5: stages.subject.instance_data: {expected}" in out.stderr, out.stderr
    assert "[pretrain]" not in out.stdout + out.stderr  # refused before the chain's first stage trains


@pytest.mark.slow  # about 25 s: the default run is at its budget
def test_a_captioned_subject_trains_under_its_own_captions(tmp_path):
    subject(tmp_path / "subject", {0: "sks ring", 1: "sks ring on a table", 2: "sks ring, close up"})
    write_spec(tmp_path, SPEC)
    out = flowspec("run", "spec.yaml", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "instance data: 3 image(s) of imagefolder, with their own captions" in out.stdout
    plan = flowspec("plan", "spec.yaml", cwd=tmp_path)
    assert "    note: instance data: 3 image(s) of imagefolder, with their own captions" in plan.stdout, plan.stderr
