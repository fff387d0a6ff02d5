"""A sweep on a real SLURM cluster: one job array per stage, the shared stage one job, the arrays chained
with afterok / aftercorr, `flowspec status` and `flowspec cancel` on the sweep, and a failed task that takes
only its own run's next task with it."""
import json
import subprocess
from pathlib import Path

import pytest

from ..runtime.helpers import TOY, write_spec
from .test_slurm import SLURM, flowspec, queued, wait_for

pytestmark = pytest.mark.slurm

# pretrain -> finetune -> polish, short; the sweep changes finetune, so pretrain is shared and polish follows
# each finetune one to one
CHAIN = TOY.replace("steps: 60}", "steps: 20}") + \
    "  - {name: polish, kind: finetune, from: finetune, steps: 10}\n" + SLURM
LR = "stages.finetune.optimizer.lr"


@pytest.mark.slow  # a shared stage and two arrays as SLURM jobs (about 50 s): the default run is at its budget
def test_a_sweep_is_one_array_per_stage_and_the_shared_stage_one_job(slurm_env, tmp_path):
    write_spec(tmp_path, CHAIN)
    out = flowspec(slurm_env, "run", "spec.yaml", "--sweep", f"{LR}=1e-3,2e-3", "--wait", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    manifest = json.loads((tmp_path / "runs" / "toy-sweep" / "sweep.json").read_text())
    arrays, jobs = manifest["slurm"]["arrays"], manifest["slurm"]["jobs"]
    pre, ft, polish = arrays["pretrain"], arrays["finetune"], arrays["polish"]
    assert jobs == {"toy-lr1e-3": {"pretrain": pre, "finetune": f"{ft}_0", "polish": f"{polish}_0"},
                    "toy-lr2e-3": {"pretrain": pre, "finetune": f"{ft}_1", "polish": f"{polish}_1"}}
    assert f"[finetune] submitted array {ft} of 2 tasks, afterok:{pre}" in out.stdout
    assert f"[polish] submitted array {polish} of 2 tasks, aftercorr:{ft}" in out.stdout
    script = (tmp_path / "runs" / "toy-sweep" / "slurm" / ft / f"{ft}_submission.sh").read_text()
    assert "#SBATCH --array=0-1" in script and f"--dependency=afterok:{pre}" in script
    # accounting knows each array's tasks by their array ids, all completed
    sacct = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", f"{pre},{ft},{polish}"],
                           capture_output=True, text=True, env=slurm_env).stdout.split()
    assert sorted(sacct) == sorted([f"{pre}|COMPLETED", f"{ft}_0|COMPLETED", f"{ft}_1|COMPLETED",
                                    f"{polish}_0|COMPLETED", f"{polish}_1|COMPLETED"])
    runs = tmp_path / "runs"
    assert [p.parent.name for p in runs.glob("*/pretrain-*") if not p.is_symlink()] == ["toy-lr1e-3"]
    for member in ("toy-lr1e-3", "toy-lr2e-3"):
        assert all((p / "DONE").exists() for p in (runs / member).glob("*-*")) and len(list((runs / member).glob(
            "*-*"))) == 3
    status = flowspec(slurm_env, "status", "runs/toy-sweep", cwd=tmp_path)
    assert status.returncode == 0 and status.stdout.count("COMPLETED") == 6, status.stdout
    assert f"[finetune] job {ft}_1 COMPLETED step 20" in status.stdout
    alone = flowspec(slurm_env, "status", "runs/toy-lr2e-3", cwd=tmp_path)  # a member's folder on its own
    assert alone.returncode == 0 and alone.stdout.count("COMPLETED") == 3 and f"job {pre} " in alone.stdout
    assert Path(tmp_path / "runs" / "toy-lr2e-3" / "slurm.json").exists()


def test_cancel_on_the_sweep_folder_cancels_every_run_and_the_shared_stage_once(slurm_env, tmp_path):
    write_spec(tmp_path, CHAIN.replace("steps: 60}", "steps: 5000}"))  # the shared pre-training outlives the test
    assert flowspec(slurm_env, "run", "spec.yaml", "--sweep", f"{LR}=1e-3,2e-3", cwd=tmp_path).returncode == 0
    jobs = json.loads((tmp_path / "runs" / "toy-sweep" / "sweep.json").read_text())["slurm"]["jobs"]
    ids = sorted({job for member in jobs.values() for job in member.values()})
    assert len(ids) == 5  # pretrain once, two finetune and two polish tasks
    cancel = flowspec(slurm_env, "cancel", "runs/toy-sweep", cwd=tmp_path)
    assert cancel.returncode == 0 and cancel.stdout.count("cancelled") == 5, cancel.stdout + cancel.stderr
    assert "[toy-lr1e-3/pretrain] job" in cancel.stdout and "[toy-lr2e-3/pretrain]" not in cancel.stdout
    wait_for(lambda: not queued([job.partition("_")[0] for job in ids]), "the cancelled jobs to leave the queue",
             timeout=60)
    # each run's three stages, the shared one twice; accounting learns of a pending array's tasks a few seconds on
    said = []
    wait_for(lambda: said.append(flowspec(slurm_env, "status", "runs/toy-sweep", cwd=tmp_path).stdout) or
             said[-1].count("CANCELLED") == 6, "every job of the sweep to be CANCELLED in `status`", timeout=60)
    assert "UNKNOWN" not in said[-1]
    again = flowspec(slurm_env, "cancel", "runs/toy-sweep", cwd=tmp_path)
    assert again.returncode == 0 and again.stdout.count("had already ended") == 5


@pytest.mark.slow  # three stages of two runs as SLURM jobs (about 45 s)
def test_a_run_whose_task_fails_loses_its_next_task_and_the_other_run_finishes(slurm_env, tmp_path):
    write_spec(tmp_path, CHAIN)
    out = flowspec(slurm_env, "run", "spec.yaml", "--set", "train.max_grad_norm=null", "--set",
                   "stages.finetune.optimizer.kind=sgd", "--sweep", f"{LR}=1e-3,1e30", "--wait", cwd=tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "[toy-lr1e30/finetune] FAILED; the end of its log:" in out.stderr and "the loss is nan" in out.stderr
    assert "[toy-lr1e30/polish] CANCELLED: not run because stage 'toy-lr1e30/finetune' failed" in out.stderr
    assert "[toy-lr1e-3/polish] job" in out.stdout and out.stdout.strip().endswith("report: runs/toy-sweep/report.html")
    runs = tmp_path / "runs"
    assert [(p / "DONE").exists() for p in sorted((runs / "toy-lr1e-3").glob("*-*"))] == [True] * 3
    assert not list((runs / "toy-lr1e30").glob("polish-*"))  # never started
    status = flowspec(slurm_env, "status", "runs/toy-sweep", cwd=tmp_path).stdout
    assert status.count("COMPLETED") == 4 and status.count("FAILED") == 1 and status.count("CANCELLED") == 1, status
