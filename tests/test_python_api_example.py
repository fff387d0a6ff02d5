"""examples/python_api: compile a spec, read its plan, run one stage, load its export with diffusers."""
import subprocess
import sys

import pytest

from flowspec.compiler import compile_spec
from flowspec.runtime.models.build import denoiser_class


@pytest.mark.slow  # two runs of the example (about 40 s): the default run stays under 20 minutes
def test_the_python_api_example_plans_runs_and_loads_a_stage(tmp_path, root):
    spec, runs = root / "specs" / "quickstart.yaml", tmp_path / "runs"
    command = [sys.executable, str(root / "examples" / "python_api" / "run_one_stage.py"), str(spec),
               "--profile", "smoke", "--stage", "pretrain", "--out", str(runs)]
    out = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    plan = compile_spec(str(spec), "smoke", [f"output_dir={runs}"], stages=["pretrain"])
    stage = plan.stage("pretrain")
    assert f"pretrain: {' -> '.join(op.op for op in stage.ops)}; " in out.stdout
    folder = f"{stage.run_dir}/model/denoiser"
    cls = denoiser_class(plan.spec.model.kind).__name__
    assert f"loaded {cls} from {folder}: velocity of shape (1, 3, 32, 32), finite: True" in out.stdout
    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and f"[pretrain] cached: {stage.run_dir}" in again.stdout  # finished: not rerun
