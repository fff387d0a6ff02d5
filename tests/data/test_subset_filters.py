"""SFT on a curated subset: filters on the caption, a metadata score and a list of file names, each filter's
count (after the ones before it) in the source summary, in `flowspec plan` and in the run log."""
import json
import random
import subprocess
import sys

import pytest

from flowspec.runtime.data import filters as filt
from flowspec.schemas.data import Filter

from ..runtime.helpers import TINY_IMAGE_MODEL
from .test_sources import folder, metadata_folder

COLOURS = ["red", "blue", "green"]


def curated(tmp_path, n: int = 30, seed: int = 0):
    """n images with captions, scores and a subset list; the expected counts computed here, independently."""
    rng = random.Random(seed)
    rows = [{"file_name": f"img{i:02d}.png", "text": f"a {rng.choice(COLOURS)} square", "score": rng.uniform(0, 10)}
            for i in range(n)]
    metadata_folder(tmp_path / "data", rows)
    listed = [r["file_name"] for r in rows if rng.random() < 0.6]
    (tmp_path / "subset.txt").write_text("# the curated files\n" + "\n".join(listed) + "\n\n")
    red = [r for r in rows if "red" in r["text"]]
    good = [r for r in red if r["score"] >= 5]
    kept = [r for r in good if r["file_name"] in listed]
    return rows, [len(red), len(good), len(kept)]


FILTERS = [Filter(contains="RED"), Filter(field="score", min=5), Filter(field="file", one_of_file="subset.txt")]


def test_each_filter_counts_what_is_left_after_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows, expected = curated(tmp_path)
    source = folder(tmp_path / "data", filters=FILTERS)
    summary = source.summary()
    assert [f["kept"] for f in summary["by_filter"]] == expected and summary["num_kept"] == expected[-1]
    assert summary["by_filter"][2]["filter"] == "file is listed in subset.txt"
    assert 0 < expected[-1] < expected[1] < expected[0] < len(rows)
    names = [rows[0]["file_name"], rows[1]["file_name"]]
    assert [r.key for r in folder(tmp_path / "data", filters=[Filter(field="file", one_of=names)]).records] == names


def test_a_file_list_that_cannot_be_read_is_an_error_at_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    curated(tmp_path)
    import pytest

    with pytest.raises(ValueError, match="filter one_of_file missing.txt: cannot read it"):
        filt.validate([Filter(field="file", one_of_file="missing.txt")])


SPEC = """\
flowspec: 1
name: subset
""" + TINY_IMAGE_MODEL + """\
data:
  source: {kind: imagefolder, path: data}
  curriculum: [{at_step: 0, resolution: 16}]
train: {global_batch: 2, checkpoint: {every: 2}, samples: {every: 100, num_steps: 2, per_prompt: 1, prompts: [a red square]}}
stages:
  - {name: pretrain, kind: pretrain, steps: 2}
  - name: sft
    kind: finetune
    from: pretrain
    steps: 2
    data:
      source: {filters: [{contains: RED}, {field: score, min: 5}, {field: file, one_of_file: subset.txt}]}
"""


@pytest.mark.slow  # a plan and a run: about 20 s; the default run is at its budget
def test_plan_and_the_run_log_report_each_filters_count(tmp_path):
    rows, (red, good, kept) = curated(tmp_path)
    (tmp_path / "spec.yaml").write_text(SPEC)
    line = (f"caption contains 'RED' (any case): {red} of {len(rows)} kept; then score >= 5: {good}; "
            f"then file is listed in subset.txt: {kept}")
    cli = [sys.executable, "-m", "flowspec.cli"]
    plan = subprocess.run([*cli, "plan", "spec.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert plan.returncode == 0, plan.stderr
    assert f"        filters: {line}" in plan.stdout, plan.stdout
    run = subprocess.run([*cli, "run", "spec.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert f"[sft] phase 0: imagefolder filters: {line}" in run.stdout, run.stdout
    report = json.loads(next(tmp_path.glob("runs/subset/sft-*/data_report.json")).read_text())
    assert [f["kept"] for f in report[0]["components"][0]["by_filter"]] == [red, good, kept]
