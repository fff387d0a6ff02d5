"""The sbatch script a stage's executor block becomes (no cluster needed: submitit writes the text)."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from pydantic import TypeAdapter

from flowspec.runtime.executors.slurm import refusal, stage_executor
from flowspec.schemas.executor import Executor, Slurm


def sbatch_text(block: Slurm, tmp_path) -> str:
    """The script submission hands to sbatch, written by the executor submit_plan uses."""
    executor = stage_executor(tmp_path, block, "pretrain", "demo", after="41")
    return executor._make_submission_file_text(executor._submitit_command_str, "uid")


def test_every_key_of_the_block_reaches_sbatch(tmp_path):
    block = TypeAdapter(Executor).validate_python({
        "kind": "slurm", "partition": "gpu", "account": "proj", "qos": "high", "nodes": 2, "gpus_per_node": 4,
        "cpus_per_task": 6, "mem_gb": 1.5, "timeout_min": 90, "constraint": "h100", "signal_delay_s": 75,
        "setup": ["module load cuda"], "sbatch": {"exclude": "node01"}})
    text = sbatch_text(block, tmp_path)
    for flag in ("--partition=gpu", "--account=proj", "--qos=high", "--nodes=2", "--ntasks-per-node=4",
                 "--gpus-per-node=4", "--cpus-per-task=6", "--mem=1536M", "--time=90", "--constraint=h100",
                 "--signal=USR2@75", "--exclude=node01", "--dependency=afterok:41", "--kill-on-invalid-dep=yes",
                 "--job-name=demo.pretrain"):
        assert f"#SBATCH {flag}\n" in text, flag
    assert "module load cuda\n" in text
    assert "srun --unbuffered --output" in text and "--kill-on-bad-exit=1" in text.split("srun ", 1)[1]


def test_a_cpu_block_asks_for_no_gpus_and_one_task(tmp_path):
    text = sbatch_text(Slurm(gpus_per_node=0, cpus_per_task=2), tmp_path)
    assert "gpus" not in text and "#SBATCH --ntasks-per-node=1\n" in text and "--partition" not in text


def test_sbatch_refusals_become_positioned_errors_with_what_was_asked():
    from flowspec.compiler.plan import StagePlan

    stage = StagePlan(name="pretrain", kind="pretrain", from_=None, upstream={}, steps=1, seed=0, hash="0" * 64,
                      run_dir="runs/demo/pretrain-0", loc="spec.yaml:12:5", ops=())
    issue = refusal(stage, Slurm(partition="gpu", gpus_per_node=9),
                    "sbatch: error: invalid partition specified: gpu\nsbatch: error: Batch job submission failed: "
                    "Invalid partition name specified", ["warmup"])
    text = str(issue)
    assert text.startswith("spec.yaml:12:5: stages.pretrain.executor: SLURM refused the job for stage 'pretrain': ")
    assert "invalid partition specified: gpu; Batch job submission failed: Invalid partition name specified" in text
    assert "partition=gpu" in text and "gpus_per_node=9" in text and "warmup were cancelled" in text


def test_the_script_tests_pass_where_no_slurm_command_can_be_found():
    """A machine with SLURM installed (CI's, once the slurm tests ran) must not be what makes them pass."""
    venv_bin = str(Path(sys.executable).parent)
    found = [c for c in ("srun", "sbatch", "squeue") if shutil.which(c, path=venv_bin)]
    assert not found, f"{venv_bin} holds {found}: run the tests from a virtual environment"
    here = Path(__file__)
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(here),
                          "-k", "not where_no_slurm_command"], cwd=here.parents[2], capture_output=True, text=True,
                         env={**os.environ, "PATH": venv_bin})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert re.search(r"^\d+ passed, 1 deselected in", out.stdout, re.MULTILINE), out.stdout[-500:]  # none skipped
