"""`flowspec run --sweep` end to end on the toy spec: the members run one after the other, the stage they
share is trained once, and `status` follows the sweep."""
import json

import pytest
import torch

from .helpers import TOY, flowspec, stage_dir, weights, write_spec

LR = "stages.finetune.optimizer.lr"


@pytest.mark.slow  # three trainings and a second run of the sweep (about 25 s)
def test_a_sweep_trains_the_shared_stage_once_and_each_runs_own_stage(tmp_path):
    write_spec(tmp_path, TOY)
    out = flowspec("run", "spec.yaml", "--sweep", f"{LR}=1e-3,2e-3", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    runs = tmp_path / "runs"
    assert out.stdout.count("[pretrain] pretrain, 60 steps") == 1 and out.stdout.count("[finetune] finetune") == 2
    trained = [p for p in runs.glob("*/pretrain-*") if not p.is_symlink()]
    assert [p.parent.name for p in trained] == ["toy-lr1e-3"]
    shared = runs / "toy-lr2e-3" / trained[0].name
    assert shared.is_symlink() and shared.resolve() == trained[0].resolve()
    assert f"[pretrain] cached: runs/toy-lr2e-3/{trained[0].name}" in out.stdout
    steps = [json.loads(line)["step"] for line in (trained[0] / "metrics.jsonl").read_text().splitlines()]
    assert steps.count(60) == 1  # logged by one training only
    first, second = (stage_dir(tmp_path, f"toy-lr{lr}", "finetune") for lr in ("1e-3", "2e-3"))
    for folder, lr in ((first, 1e-3), (second, 2e-3)):
        assert (folder / "DONE").exists()
        assert json.loads((folder / "resolved.json").read_text())["stage"]["optimizer"]["lr"] == lr
    assert any(not torch.equal(a, b) for a, b in zip(weights(first).values(), weights(second).values()))

    # each run's report, then the comparison page, whose path is the sweep's last line
    assert out.stdout.count("report: runs/toy-lr") == 2 and (runs / "toy-lr2e-3" / "report.html").is_file()
    assert out.stdout.strip().splitlines()[-1] == "report: runs/toy-sweep/report.html"
    assert "toy-lr2e-3/report.html" in (runs / "toy-sweep" / "report.html").read_text()
    manifest = json.loads((runs / "toy-sweep" / "sweep.json").read_text())
    assert manifest["axes"] == {LR: ["1e-3", "2e-3"]}
    assert [(r["name"], r["folder"], r["overrides"]) for r in manifest["runs"]] == [
        ("toy-lr1e-3", "../toy-lr1e-3", {LR: "1e-3"}), ("toy-lr2e-3", "../toy-lr2e-3", {LR: "2e-3"})]

    stamps = [(p / "DONE").stat().st_mtime_ns for p in (trained[0], first, second)]
    again = flowspec("run", "spec.yaml", "--sweep", f"{LR}=1e-3,2e-3", cwd=tmp_path)
    assert again.returncode == 0 and "steps on cpu" not in again.stdout
    assert [(p / "DONE").stat().st_mtime_ns for p in (trained[0], first, second)] == stamps
    status = flowspec("status", "runs/toy-sweep", cwd=tmp_path)
    assert status.returncode == 0 and status.stdout.count("local done") == 4
    assert status.stdout.count("(shared: trained in toy-lr1e-3)") == 1


@pytest.mark.slow  # two trainings (about 15 s)
def test_a_run_that_fails_does_not_stop_the_others_and_the_sweep_fails(tmp_path):
    write_spec(tmp_path, TOY)
    out = flowspec("run", "spec.yaml", "--set", "train.max_grad_norm=null", "--sweep",
                   "stages.finetune.optimizer={kind: sgd, lr: 1.0e+30},{kind: adamw, lr: 1.0e-3}", cwd=tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "[finetune] stopped" in out.stderr and "1 of 2 runs finished" in out.stdout
    names = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert names == ["toy-optimizerkind_adamw_lr_1.0e-3", "toy-optimizerkind_sgd_lr_1.0e_30", "toy-sweep"]
    assert (stage_dir(tmp_path, names[0], "finetune") / "DONE").exists()
    assert not (stage_dir(tmp_path, names[1], "finetune") / "DONE").exists()
