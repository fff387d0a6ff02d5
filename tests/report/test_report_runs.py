"""Reports of real runs: `flowspec run` ends with the report's path, and a sweep's page compares two real
toy2d runs that differ in their learning rate."""
import dataclasses
import json
import re
from pathlib import Path

import pytest

from flowspec.compiler import compile_spec
from flowspec.runtime.estimate import estimate_stage

from ..runtime.helpers import TOY, flowspec, stage_dir, write_spec

pytestmark = pytest.mark.slow  # trainings (a few seconds each, with torch's import)


def report_line(stdout: str, cwd: Path) -> Path:
    """The path that the run's last line names, which must be the report it wrote."""
    last = stdout.strip().splitlines()[-1]
    assert last.startswith("report: "), stdout[-2000:]
    path = cwd / last.removeprefix("report: ")
    assert path.name == "report.html" and path.is_file()
    return path


def test_run_ends_with_the_report_path(tmp_path):
    write_spec(tmp_path, TOY)
    run = flowspec("run", "spec.yaml", "--stage", "pretrain", "--set", "stages.pretrain.steps=10", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    page = report_line(run.stdout, tmp_path)
    assert page == tmp_path / "runs" / "toy" / "report.html"
    text = page.read_text()
    assert stage_dir(tmp_path, "toy", "pretrain").name in text and 'id="finetune"' not in text
    again = flowspec("run", "spec.yaml", "--stage", "pretrain", "--set", "stages.pretrain.steps=10", cwd=tmp_path)
    assert "[pretrain] cached" in again.stdout and report_line(again.stdout, tmp_path) == page  # cached: written too


def test_the_stage_keeps_the_plans_estimate_and_the_report_shows_it(tmp_path):
    write_spec(tmp_path, TOY)
    sets = ["stages.pretrain.steps=10", "stages.pretrain.train.global_batch=16"]
    run = flowspec("run", "spec.yaml", "--stage", "pretrain", *[a for s in sets for a in ("--set", s)], cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    plan = compile_spec(str(tmp_path / "spec.yaml"), sets=sets)
    expected = json.loads(json.dumps(dataclasses.asdict(estimate_stage(plan, plan.stage("pretrain")))))
    kept = json.loads((stage_dir(tmp_path, "toy", "pretrain") / "estimate.json").read_text())
    assert kept == expected and kept["train_flops"] > 0
    estimates = report_line(run.stdout, tmp_path).read_text().split("<h3>Estimates</h3>")[1].split("</table>")[0]
    row = re.findall(r"<tr>(.*?)</tr>", estimates)[1]
    assert row.startswith("<td>pretrain</td>") and f"<td>{kept['train_flops']:.3g}</td>" in row
    assert f"<td>{kept['gpu_hours']:.3g}</td>" in row and f"<td>{kept['devices']} x {kept['accelerator']}</td>" in row


def test_sweep_page_over_two_real_runs(tmp_path, root):
    lrs = {"lr-a": "1e-3", "lr-b": "1e-2"}
    for name, lr in lrs.items():
        run = flowspec("run", str(root / "specs" / "toy2d.yaml"), "--set", f"output_dir={tmp_path / 'runs'}",
                       "--set", f"name={name}", "--set", f"optimizer.lr={lr}", "--set", "stages.pretrain.steps=100",
                       "--set", "optimizer.schedule.warmup_steps=10", "--set", "train.samples.every=50",
                       "--set", "train.checkpoint.every=50", cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        assert report_line(run.stdout, tmp_path) == tmp_path / "runs" / name / "report.html"
    sweep = tmp_path / "runs" / "toy2d-sweep"
    sweep.mkdir()
    (sweep / "sweep.json").write_text(json.dumps({
        "spec": str(root / "specs" / "toy2d.yaml"), "axes": {"optimizer.lr": list(lrs.values())},
        "runs": [{"name": n, "folder": f"../{n}", "overrides": {"optimizer.lr": lr}} for n, lr in lrs.items()]}))
    for name in lrs:
        (tmp_path / "runs" / name / "report.html").unlink()  # the sweep's report writes them again
    out = flowspec("report", str(sweep), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    page = (sweep / "report.html").read_text()
    rows = re.findall(r"<tr>(.*?)</tr>", page.split("<h2>Runs</h2>")[1].split("</table>")[0])
    assert len(rows) == 3 and "pretrain: final loss" in rows[0] and "pretrain: sliced_wasserstein" in rows[0]
    losses = []
    for row, (name, lr) in zip(rows[1:], lrs.items()):
        assert f'<a href="../{name}/report.html">{name}</a>' in row and f"<td>{lr}</td>" in row
        assert (tmp_path / "runs" / name / "report.html").is_file()
        cells = re.findall(r'<td class="num">([^<]*)</td>', row)
        losses.append(float(cells[0]))
    assert losses[0] != losses[1]  # each row is its own run's
    assert re.search(r'<img src="data:image/png;base64,[^"]+" alt="pretrain: loss of each run"', page)
