"""Diffusion-DPO (runtime/objectives/diffusion_dpo.py, runtime/data/pairs.py) end to end on 2-D points:
pairs generated once by the start and ranked by toy2d_region (cached by content, an interrupted generation
resumes at its first missing chunk), the loss is log 2 at the first step (policy = reference), the reward
rises, with LoRA too (the reference is the start with the adapter off); a resume is bitwise and a
reference that changed under a resume is refused; a bad jsonl line is named."""
import json
import math
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from flowspec.runtime.data.pairs import read_jsonl
from flowspec.runtime.data.sources import DataError

from .helpers import TOY, flowspec, kill_after_checkpoint, stage_dir, start, weights, write_spec

BASE = TOY.replace("  - {name: finetune, kind: finetune, from: pretrain, steps: 20, optimizer: {lr: 1.0e-3}}\n", "")
PAIRS = "{kind: generated, num_pairs: 256, sampling_steps: 8, reward: {kind: toy2d_region, centers: [[1, 0]], radius: 0.3}}"
DPO = f"""\
  - name: dpo
    kind: diffusion_dpo
    from: pretrain
    steps: 30
    beta: 50
    pairs: {PAIRS}
    optimizer: {{lr: 3.0e-3}}
    train: {{log_every: 1}}
  - name: dpo_lora
    kind: diffusion_dpo
    from: pretrain
    steps: 30
    beta: 50
    pairs: {PAIRS}
    optimizer: {{lr: 3.0e-2}}
    lora: {{rank: 2, targets: all-linear}}
    train: {{log_every: 1}}
"""


def metrics(stage) -> list[dict]:
    return [json.loads(line) for line in (stage / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dpo")
    write_spec(folder, BASE + DPO)
    out = flowspec("run", "spec.yaml", cwd=folder)
    assert out.returncode == 0, out.stdout + out.stderr
    return folder, out.stdout


@pytest.mark.parametrize("stage", ["dpo", "dpo_lora"])
def test_dpo_starts_at_log_2_and_raises_the_reward(finished, stage):
    folder = stage_dir(finished[0], "toy", stage)
    records = metrics(folder)
    assert records[0]["loss"] == pytest.approx(math.log(2), abs=1e-7)  # the policy is the reference
    assert records[0]["implicit_accuracy"] == 0.0 and records[-1]["implicit_accuracy"] > 0.5
    scores = json.loads((folder / "eval.json").read_text())
    assert scores["reward"]["mean"] > scores["reward_start"]["mean"] + 0.05, scores


@pytest.mark.slow  # the stage twice more: with the slow tests, to keep the default run under budget
def test_generated_pairs_are_made_once_and_resume_at_a_missing_chunk(finished, tmp_path):
    folder, log = finished
    assert "[dpo] 256 pair(s) in 4 chunk(s): 4 generated, 0 cached" in log
    cached = sorted((folder / ".cache" / "flowspec" / "dpo_pairs").iterdir())
    assert len(cached) == 2  # each stage draws its own pairs (its seed)
    shutil.rmtree(stage_dir(folder, "toy", "dpo"))  # the stage again: its pairs are not made again
    out = flowspec("run", "spec.yaml", "--stage", "dpo", cwd=folder)
    assert "[dpo] 256 pair(s) in 4 chunk(s): 0 generated, 4 cached" in out.stdout
    chunks = sorted(next(f for f in cached if f.name in out.stdout).glob("chunk-*.npz"))
    kept = {path.name: dict(np.load(path)) for path in chunks}
    chunks[2].unlink()  # as if the generation had been interrupted there
    shutil.rmtree(stage_dir(folder, "toy", "dpo"))
    out = flowspec("run", "spec.yaml", "--stage", "dpo", cwd=folder)
    assert out.returncode == 0, out.stderr
    assert "[dpo] 256 pair(s) in 4 chunk(s): 1 generated, 3 cached" in out.stdout
    again = dict(np.load(chunks[2]))
    assert all(np.array_equal(again[k], kept[chunks[2].name][k]) for k in again)


@pytest.mark.slow  # kill -9 and resume: with the slow tests, to keep the default run under budget
def test_a_dpo_stage_resumes_bitwise_and_refuses_a_reference_that_changed(finished, tmp_path):
    dpo = DPO.split("  - name: dpo_lora")[0].replace("    from: pretrain\n", "    from: pretrain\n    reference: ref\n")
    write_spec(tmp_path, BASE + "  - {name: ref, kind: finetune, from: pretrain, steps: 10}\n" + dpo)
    assert flowspec("run", "spec.yaml", "--stage", "ref", cwd=tmp_path).returncode == 0
    whole = tmp_path / "whole"
    whole.mkdir()
    write_spec(whole, (tmp_path / "spec.yaml").read_text())
    assert flowspec("run", "spec.yaml", cwd=whole).returncode == 0
    proc = start("run", "spec.yaml", "--stage", "dpo", cwd=tmp_path)
    kill_after_checkpoint(proc, "runs/toy/dpo-*", tmp_path, 10)
    out = flowspec("run", "spec.yaml", "--stage", "dpo", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    a, b = weights(stage_dir(tmp_path, "toy", "dpo")), weights(stage_dir(whole, "toy", "dpo"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the reference's weights change under an unfinished stage: its checkpoints say against which it trained
    dpo = stage_dir(tmp_path, "toy", "dpo")
    (dpo / "DONE").unlink()
    model = next((stage_dir(tmp_path, "toy", "ref") / "model").rglob("*.safetensors"))
    from safetensors.torch import load_file, save_file

    save_file({k: v + 0.01 for k, v in load_file(str(model)).items()}, str(model))
    out = flowspec("run", "spec.yaml", "--stage", "dpo", cwd=tmp_path)
    assert out.returncode == 2 and "stages.dpo.reference: " in out.stderr and "the reference changed" in out.stderr


def image(path, colour):
    Image.new("RGB", (8, 8), colour).save(path)


def test_a_bad_jsonl_line_is_named_with_its_number(tmp_path):
    image(tmp_path / "a.png", (255, 0, 0))
    image(tmp_path / "b.png", (0, 0, 255))
    image(tmp_path / "c.png", (255, 0, 0))
    good = '{"caption": "a red square", "winner": "a.png", "loser": "b.png"}'
    cases = {'{"caption": "x", "winner": "a.png"}': "line 2: missing key 'loser'",
             '{"caption": "x", "winner": "a.png", "loser": "nope.png"}': "loser image",
             '{"caption": "x", "winner": "a.png", "loser": "c.png"}': "winner and loser are the same image",
             'not json': "not a JSON object"}
    for line, message in cases.items():
        path = tmp_path / "pairs.jsonl"
        path.write_text(good + "\n" + line + "\n")
        with pytest.raises(DataError) as caught:
            read_jsonl(path, 16)
        assert str(caught.value).startswith(f"{path}:2: ") and message.replace("line 2: ", "") in str(caught.value)
    path.write_text(good + "\n\n" + good + "\n")
    pairs = read_jsonl(path, 16)
    assert len(pairs) == 2 and pairs.winners.shape == (2, 3, 16, 16)
    assert torch.allclose(pairs.winners[0, :, 0, 0], torch.tensor([1.0, -1.0, -1.0]))
