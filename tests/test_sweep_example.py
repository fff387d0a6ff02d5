"""examples/sweep: the learning-rate sweep its README shows, run as written."""
import json
import re
import shlex
import subprocess
import sys

import pytest


@pytest.mark.slow  # one pre-training and three fine-tunings (about 40 s)
def test_the_sweep_example_runs_three_fine_tunings_on_one_pre_training(tmp_path, root):
    readme = (root / "examples" / "sweep" / "README.md").read_text()
    command = shlex.split(re.search(r"^flowspec run examples/sweep/spec\.yaml --sweep .*$", readme, re.M).group(0))
    command[2] = str(root / command[2])
    out = subprocess.run([sys.executable, "-m", "flowspec.cli", *command[1:]], cwd=tmp_path, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    runs = tmp_path / "runs"
    manifest = json.loads((runs / "toy2d_lr-sweep" / "sweep.json").read_text())
    names = [run["name"] for run in manifest["runs"]]
    assert names == ["toy2d_lr-lr3e-4", "toy2d_lr-lr1e-3", "toy2d_lr-lr3e-3"]
    assert [p.parent.name for p in runs.glob("*/pretrain-*") if not p.is_symlink()] == [names[0]]
    assert out.stdout.count("[pretrain] cached") == 2
    for name in names:
        (finetune,) = (runs / name).glob("finetune-*")
        evaluation = json.loads((finetune / "eval.json").read_text())
        assert evaluation["sliced_wasserstein"] > 0
    page = runs / "toy2d_lr-sweep" / "report.html"
    assert out.stdout.strip().splitlines()[-1] == "report: runs/toy2d_lr-sweep/report.html" and page.is_file()
    assert all(f"{name}/report.html" in page.read_text() for name in names)
    status = subprocess.run([sys.executable, "-m", "flowspec.cli", "status", "runs/toy2d_lr-sweep"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert status.returncode == 0 and status.stdout.count("local done") == 6, status.stdout
