"""The benchmark scripts still run against the current runtime (at the smallest sizes; their numbers
go into the docs, and a script that no longer runs would leave those numbers unreproducible)."""
import json
import subprocess
import sys

import pytest

from .conftest import ROOT

SMALL = [
    (["benchmarks/step_overhead.py", "--steps", "2", "--warmup", "1"], "ratio flowspec / hand-written"),
    (["benchmarks/step_overhead.py", "--tiny", "--steps", "20"], "framework overhead:"),
    (["benchmarks/data_throughput.py", "--batches", "2", "--workers", "1"], "training step consumes"),
    pytest.param(["benchmarks/repa_convergence.py", "--steps", "60", "--every", "30", "--out", "{tmp}/repa.json"],
                 "checker accuracy at the end", marks=[pytest.mark.slow, pytest.mark.extended]),  # 77 s; REPA itself: tests/properties
    # about 20 s each: the default run is at its budget
    pytest.param(["benchmarks/gradient_checkpointing.py", "--batch", "2", "--resolution", "32", "--steps", "1"],
                 "gradient checkpointing: activations -", marks=pytest.mark.slow),
    pytest.param(["benchmarks/local_estimate.py", "--spec", "specs/toy2d.yaml", "--steps", "200"],
                 "ratio announced / measured", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("args,expected", SMALL, ids=lambda v: v[0] if isinstance(v, list) else None)
def test_benchmark_runs(tmp_path, args, expected):
    out = subprocess.run([sys.executable, *[a.format(tmp=tmp_path) for a in args]], cwd=ROOT, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert expected in out.stdout


def test_the_gpu_step_benchmark_compares_the_same_work(tmp_path):
    """--tiny: both models through flowspec's stage path and the hand-written loops, eager and compiled (dynamo's
    eager backend); flowspec's step does the reference's FLOPs (same model, batch, objective) within 2%."""
    out = subprocess.run([sys.executable, "benchmarks/gpu_step.py", "--tiny", "--json", str(tmp_path / "g.json")],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / "g.json").read_text())
    assert result["peak_tflops"] > 0
    for model in ("dit_xl", "sd3_medium"):
        rows = {r["loop"]: r for r in result["rows"] if r["model"] == model}
        assert set(rows) == {"flowspec (compile: false)", "reference, eager", "reference, compiled"}
        ours, ref = rows["flowspec (compile: false)"], rows["reference, eager"]
        assert ref["flops_per_step"] > 0 and ours["flops_per_step"] == pytest.approx(ref["flops_per_step"], rel=0.02)
        assert ours["ratio_to_best_reference"] == pytest.approx(
            ours["img_per_s"] / max(rows["reference, eager"]["img_per_s"], rows["reference, compiled"]["img_per_s"]),
            rel=0.01)
        assert ours["plan_memory_gib"] >= 0 and ours["plan_step_s"] > 0


@pytest.mark.slow  # six small stages and five models sampled: about two minutes
@pytest.mark.extended  # DreamBooth's stages are checked in tests/runtime/test_dreambooth.py
def test_the_dreambooth_benchmark_runs(tmp_path):
    out = subprocess.run([sys.executable, "benchmarks/dreambooth_toy.py", "--smoke", "--out", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "lora_prior" in out.stdout and "class acc" in out.stdout


@pytest.mark.slow  # five small stages on 2-D points and their samples: about twenty seconds
def test_the_preference_benchmark_runs(tmp_path):
    out = subprocess.run([sys.executable, "benchmarks/preference_toy.py", "--smoke", "--out", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    table = lines[lines.index(next(line for line in lines if line.split()[:2] == ["model", "reward"])):][:6]
    assert table[0].split() == ["model", "reward", "in", "mode", "rest", "W2"]
    assert [row.split()[0] for row in table[1:]] == ["base", "refl", "grpo_kl", "grpo_no_kl", "dpo"]
    assert "hack (rewarded off the data, gold = the four modes): stopped at step" in out.stdout


@pytest.mark.slow  # the quick start's two stages at their smoke sizes, four tiny preference stages: 5-7 minutes
@pytest.mark.extended  # the kinds run in tests/runtime (test_flow_grpo, ...) and the quick-start GRPO smoke profile
def test_the_shapes_preference_benchmark_runs(tmp_path):
    out = subprocess.run([sys.executable, "benchmarks/preference_shapes.py", "--smoke", "--out", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "one-word prompts" in out.stdout and "refl" in out.stdout


@pytest.mark.slow  # seven small stages on 2-D points and their reports: about half a minute
@pytest.mark.extended  # the kinds are distilled in tests/runtime/test_distillation.py and the life-cycle smoke
def test_the_toy_distillation_benchmark_runs(tmp_path):
    out = subprocess.run([sys.executable, "benchmarks/distill_toy.py", "--smoke", "--out", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    kinds = {line.split()[0] for line in out.stdout.splitlines() if line.split()[1:2] == ["student"]}
    assert kinds == {"progressive", "reflow", "instaflow", "lcm", "add", "dmd2"}
    assert "best 1-step student:" in out.stdout


@pytest.mark.slow  # the quick start's two stages at their smoke sizes and five tiny students: minutes
@pytest.mark.extended  # the kinds are distilled in tests/runtime/test_distillation.py and the smoke chains
def test_the_shapes_distillation_benchmark_runs(tmp_path):
    out = subprocess.run([sys.executable, "benchmarks/distill_shapes.py", "--smoke", "--out", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    kinds = {line.split()[0] for line in out.stdout.splitlines() if line.split()[1:2] == ["teacher"]}
    assert kinds == {"progressive", "reflow", "lcm", "add", "dmd2"}
