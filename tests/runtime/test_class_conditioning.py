"""Class-conditional DiT end to end: labels from the data, prompts mapped to classes by name in samples,
evaluation and `flowspec sample`, the label table checked against the data before anything runs."""
import json

import numpy as np
import pytest
from PIL import Image

from flowspec.compiler import SpecError, compile_spec
from flowspec.runtime.data.classes import ClassNames, source_classes
from flowspec.runtime.data.shapes import class_label, make_scene
from flowspec.schemas.data import SHAPES_CLASSES

from .helpers import flowspec, stage_dir, write_spec

DIT = """\
flowspec: 1
name: dit
seed: 0
model:
  kind: dit
  preset: tiny
  config: {in_channels: 3, out_channels: 3, sample_size: 16, patch_size: 1}
  latent: {kind: pixel}
data:
  source: {kind: shapes, num_images: 4096}
  curriculum: [{at_step: 0, resolution: 16, complexity: [1, 1]}]
timesteps: {sampler: {kind: logit_normal}}
optimizer: {kind: adamw, lr: 2.0e-3, schedule: {kind: constant, warmup_steps: 20}}
train:
  global_batch: 32
  ema: {decay: 0.98}
  cfg_dropout: 0.1
  checkpoint: {every: 1000}
  samples: {every: 1000, num_steps: 28, cfg_scale: 3.0, per_prompt: 2, prompts: ["a red circle", "two blue squares"]}
stages:
  - {name: pretrain, kind: pretrain, steps: 800}
"""


def test_a_shapes_prompt_asks_for_the_class_of_its_first_object():
    classes = ClassNames(SHAPES_CLASSES, "shapes")
    for i in range(200):
        scene = make_scene(3, i, (1, 5))
        assert classes.label(scene.caption) == class_label(scene), scene.caption
    with pytest.raises(ValueError, match="names no class"):
        classes.label("a photo of a dog")


def test_folder_classes_are_its_subfolders_and_refuse_unfiled_images(tmp_path):
    from flowspec.schemas.data import ImageFolder

    for name in ("dog", "cat"):
        (tmp_path / name).mkdir()
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / name / "a.png")
        (tmp_path / name / "a.txt").write_text(f"a {name}")
    classes = source_classes(ImageFolder(kind="imagefolder", path=str(tmp_path)))
    assert classes.names == ("cat", "dog") and classes.labels(["dog", "Cat "]) == (1, 0)
    with pytest.raises(ValueError, match="classes: cat, dog"):
        classes.label("a dog")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "loose.png")
    (tmp_path / "loose.txt").write_text("loose")
    with pytest.raises(Exception, match="1 image.* lie directly in .*loose.png"):
        source_classes(ImageFolder(kind="imagefolder", path=str(tmp_path)))


def test_the_label_table_must_hold_the_datas_classes(tmp_path):
    text = DIT.replace("patch_size: 1}", "patch_size: 1, num_embeds_ada_norm: 16}")
    path = write_spec(tmp_path, text)
    column = text.splitlines()[6].index("num_embeds_ada_norm") + 1
    with pytest.raises(SpecError) as caught:
        compile_spec(str(path))
    assert [str(i) for i in caught.value.issues] == [
        f"{path}:7:{column}: model.config.num_embeds_ada_norm: the shapes data has 18 classes but the dit model's label "
        "table has 16: set model.config.num_embeds_ada_norm: 18"]


# Measured for seeds 0, 1, 2 after 800 steps: checker accuracy 0.094, 0.094, 0.109 (chance 0.037), colour
# accuracy 0.94, 0.94, 0.92 (chance 1/6). A pixel-space DiT this small learns colours at once and shapes slowly,
# so the margin on the whole caption is small; colour alone shows each prompt reached its own class.
MARGIN = 0.03
COLOUR = 0.5


@pytest.mark.slow
def test_class_conditional_dit_learns_its_classes_above_chance(tmp_path):
    write_spec(tmp_path, DIT)
    run = flowspec("run", "spec.yaml", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    pretrain = stage_dir(tmp_path, "dit", "pretrain")
    evaluation = json.loads((pretrain / "eval.json").read_text())
    assert evaluation["complexity"] == [1, 1] and evaluation["chance"] < 0.07
    assert evaluation["checker_accuracy"] > evaluation["chance"] + MARGIN, evaluation
    assert evaluation["checker_attributes"]["color"] > COLOUR, evaluation
    assert ClassNames.load(pretrain / "model").names == SHAPES_CLASSES

    out = flowspec("sample", str(pretrain), "--prompt", "a green triangle", "--n", "2", "--steps", "6", "--out",
                   "g.png", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    refused = flowspec("sample", str(pretrain), "--prompt", "a photo of a dog", "--out", "x.png", cwd=tmp_path)
    assert refused.returncode == 2 and "names no class" in refused.stderr and "Traceback" not in refused.stderr


@pytest.mark.slow  # plans and a run on an image folder (about 30 s): the default run stays under 20 minutes
def test_plan_checks_a_folders_classes_against_the_label_table_and_the_sample_prompts(tmp_path):
    def folder(classes, loose=False):
        root = tmp_path / f"photos{len(classes)}{loose}"
        for name in classes:
            (root / name).mkdir(parents=True)
            Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(root / name / "a.png")
            (root / name / "a.txt").write_text(f"a {name}")
        if loose:
            Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(root / "loose.png")
            (root / "loose.txt").write_text("loose")
        return root

    def plan(root, prompts='["cat"]'):
        text = DIT.replace("{kind: shapes, num_images: 4096}", f"{{kind: imagefolder, path: {root}}}")
        text = text.replace('prompts: ["a red circle", "two blue squares"]', f"prompts: {prompts}")
        write_spec(tmp_path, text)
        return flowspec("plan", "spec.yaml", cwd=tmp_path), text.splitlines()

    two = folder(["cat", "dog"])
    out, lines = plan(two)
    assert out.returncode == 0, out.stderr
    data_line = lines.index("data:") + 1
    out, _ = plan(folder([f"c{i:02d}" for i in range(20)]))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith(f"spec.yaml:{data_line}:1: stages.pretrain.data: the data has 20 classes (c00, c01")
    assert "label table has 18: set model.config.num_embeds_ada_norm: 20" in out.stderr
    out, _ = plan(folder(["cat"], loose=True))
    assert out.returncode == 2 and "1 image(s) lie directly in" in out.stderr and "loose.png" in out.stderr
    out, lines = plan(two, prompts='["a cat"]')
    prompts_line = next(i for i, line in enumerate(lines, 1) if "prompts:" in line)
    assert out.returncode == 2 and out.stderr.startswith(f"spec.yaml:{prompts_line}:")
    assert "stages.pretrain.train.samples.prompts: prompt 'a cat' names no class" in out.stderr
