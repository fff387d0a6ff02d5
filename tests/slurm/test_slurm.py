"""The slurm executor against a real SLURM cluster: dependent jobs, preemption with exact resume,
failure reporting, refusals at submission, status and cancel, and DDP across a job's tasks."""
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ..runtime.helpers import TOY, stage_dir, weights, write_spec

pytestmark = pytest.mark.slurm

SLURM = "executor: {kind: slurm, gpus_per_node: 0, cpus_per_task: 1, timeout_min: 10, signal_delay_s: 30}\n"
ONE_STAGE = TOY.replace("  - {name: finetune, kind: finetune, from: pretrain, steps: 20, optimizer: {lr: 1.0e-3}}\n", "")
# long enough that the interrupt, sent once the first checkpoint exists, always lands mid-training
LONG = ONE_STAGE.replace("steps: 60}", "steps: 3000}").replace("checkpoint: {every: 10, keep: 2}",
                                                             "checkpoint: {every: 100, keep: 2}")


def flowspec(env, *args, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flowspec.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def jobs(cwd: Path, name: str = "toy") -> list[dict]:
    return json.loads((cwd / "runs" / name / "slurm.json").read_text())[-1]["jobs"]


def queued(job_ids: list[str]) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i", "-j", ",".join(job_ids)], capture_output=True, text=True)
    return out.stdout.split()


def wait_for(predicate, what: str, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_a_two_stage_chain_runs_as_dependent_jobs_and_finished_stages_are_not_resubmitted(slurm_env, tmp_path):
    write_spec(tmp_path, TOY + SLURM)
    started = time.monotonic()
    out = flowspec(slurm_env, "run", "spec.yaml", "--wait", cwd=tmp_path)
    seconds = time.monotonic() - started
    assert out.returncode == 0, out.stdout + out.stderr
    first, second = jobs(tmp_path)
    assert f"[finetune] submitted job {second['job_id']}, after job {first['job_id']}" in out.stdout
    script = Path(second["folder"]) / f"{second['job_id']}_submission.sh"
    assert f"--dependency=afterok:{first['job_id']}" in script.read_text()
    for stage in ("pretrain", "finetune"):
        assert (stage_dir(tmp_path, "toy", stage) / "DONE").exists()
    print(f"two-stage toy chain (60 + 20 steps), submit to finish: {seconds:.1f} s")
    again = flowspec(slurm_env, "run", "spec.yaml", "--wait", cwd=tmp_path)
    assert again.returncode == 0 and "submitted" not in again.stdout
    assert "[pretrain] cached" in again.stdout and "[finetune] cached" in again.stdout
    status = flowspec(slurm_env, "status", "runs/toy", cwd=tmp_path)
    assert status.returncode == 0 and status.stdout.count("COMPLETED") == 2 and "step 20" in status.stdout


# With the slow tests (about 2.5 minutes for the four; the default run must stay under 20 minutes on 2 cores).
@pytest.mark.slow
@pytest.mark.parametrize("timeout,tasks,sharding", [
    # the plain preemption: the two-node one (tests/slurm/test_multinode.py) checks the same and more
    pytest.param(False, 1, "none", marks=pytest.mark.extended), (True, 1, "none"),
    pytest.param(False, 2, "none", marks=pytest.mark.extended),
    # the checkpoint at the signal gathered from both tasks' shards, loaded into new shards after the requeue
    pytest.param(False, 2, "fsdp", marks=pytest.mark.extended)],
    ids=["preempted", "time-limit", "preempted-2-tasks", "preempted-2-tasks-sharded"])
def test_a_preempted_stage_requeues_and_ends_with_the_weights_of_an_uninterrupted_run(slurm_env, tmp_path, timeout,
                                                                                      tasks, sharding):
    from submitit.slurm.slurm import SlurmJob

    executor = SLURM.replace("gpus_per_node: 0", "gpus_per_node: 2") if tasks == 2 else SLURM
    spec = LONG.replace("  cfg_dropout: 0.0\n", f"  cfg_dropout: 0.0\n  sharding: {sharding}\n")
    assert f"sharding: {sharding}" in spec
    for name in ("plain", "preempted"):
        (tmp_path / name).mkdir()
        write_spec(tmp_path / name, spec + executor)
        assert flowspec(slurm_env, "run", "spec.yaml", cwd=tmp_path / name).returncode == 0
    cwd = tmp_path / "preempted"
    job = jobs(cwd)[0]
    wait_for(lambda: list(cwd.glob("runs/toy/pretrain-*/checkpoints/step-*.pt")), "a first checkpoint")
    # preemption: SIGTERM, then USR2; a time limit: USR2 alone (SLURM's --signal before the limit)
    SlurmJob(folder=job["folder"], job_id=job["job_id"])._interrupt(timeout=timeout)
    for name in ("preempted", "plain"):
        follow = flowspec(slurm_env, "status", "runs/toy", "--wait", cwd=tmp_path / name)
        assert follow.returncode == 0, follow.stdout + follow.stderr
    log = (Path(job["folder"]) / f"{job['job_id']}_0_log.out").read_text()
    # two runs of the job (submitit's own "Requeued job" line can be cut: `scontrol requeue` runs inside the job)
    assert "requeueing" in log and log.count("Starting with JobEnvironment") == 2, log
    step = int(log.split("checkpoint at step ")[1].split()[0])
    assert 100 <= step < 3000 and f"resumed from step {step}" in log  # the signal's own checkpoint, not an older one
    a, b = weights(stage_dir(tmp_path / "plain", "toy", "pretrain")), weights(stage_dir(cwd, "toy", "pretrain"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_failing_stage_cancels_its_dependants_and_reports_its_log(slurm_env, tmp_path):
    write_spec(tmp_path, TOY + SLURM)
    out = flowspec(slurm_env, "run", "spec.yaml", "--wait", "--set", "optimizer={kind: sgd, lr: 1.0e+30}",
                   "--set", "train.max_grad_norm=null", cwd=tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    first, second = jobs(tmp_path)
    assert f"[pretrain] FAILED; the end of its log:\n{first['folder']}/{first['job_id']}_0_log.err" in out.stderr
    assert "RuntimeError: stage 'pretrain' stopped: the loss is " in out.stderr and "the last checkpoint is kept" in out.stderr
    assert "[finetune] CANCELLED: not run because stage 'pretrain' failed" in out.stderr
    assert not (Path(first["run_dir"]) / "DONE").exists() and not Path(second["run_dir"]).exists()


@pytest.mark.parametrize("setting,reason", [
    # 16 GPUs means 16 tasks: on this 8-CPU node sbatch names the CPUs first
    ("executor.gpus_per_node=16", "More processors requested than permitted"),
    ("executor.partition=gpu", "invalid partition"),
    ("executor.mem_gb=100000", "Memory specification can not be satisfied"),
    ("executor.nodes=2", "Node count specification invalid"),
])
def test_an_impossible_request_is_refused_at_submission(slurm_env, tmp_path, setting, reason):
    write_spec(tmp_path, TOY + SLURM)
    out = flowspec(slurm_env, "run", "spec.yaml", "--set", setting, cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "stages.pretrain.executor: SLURM refused the job for stage 'pretrain'" in out.stderr
    assert reason.lower() in out.stderr.lower()
    assert not (tmp_path / "runs" / "toy" / "slurm.json").exists()  # nothing queued


def test_status_and_cancel_follow_the_queued_chain_and_a_second_submission_is_refused(slurm_env, tmp_path):
    write_spec(tmp_path, TOY.replace("steps: 60}", "steps: 5000}") + SLURM)
    assert flowspec(slurm_env, "run", "spec.yaml", cwd=tmp_path).returncode == 0
    ids = [job["job_id"] for job in jobs(tmp_path)]
    status = flowspec(slurm_env, "status", "spec.yaml", cwd=tmp_path)
    assert status.returncode == 0 and f"job {ids[0]}" in status.stdout and f"job {ids[1]} PENDING" in status.stdout
    twice = flowspec(slurm_env, "run", "spec.yaml", cwd=tmp_path)
    assert twice.returncode == 2 and "already queued or running" in twice.stderr
    cancel = flowspec(slurm_env, "cancel", "runs/toy", cwd=tmp_path)
    assert cancel.returncode == 0 and cancel.stdout.count("cancelled") == 2
    wait_for(lambda: not queued(ids), "the cancelled jobs to leave the queue", timeout=60)
    assert flowspec(slurm_env, "status", "runs/toy", cwd=tmp_path).stdout.count("CANCELLED") == 2


@pytest.mark.slow
@pytest.mark.extended  # DDP across a job's tasks: tests/slurm/test_multinode.py's two-node stage checks the same
def test_a_job_with_two_tasks_trains_data_parallel_like_two_local_processes(slurm_env, tmp_path):
    """gpus_per_node: 2 on the cluster's fake GPUs gives 2 tasks; without CUDA they talk gloo."""
    (tmp_path / "slurm").mkdir()
    write_spec(tmp_path / "slurm", ONE_STAGE + SLURM.replace("gpus_per_node: 0", "gpus_per_node: 2"))
    out = flowspec(slurm_env, "run", "spec.yaml", "--wait", cwd=tmp_path / "slurm")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "(1 node(s) x 2 task(s))" in out.stdout
    job = jobs(tmp_path / "slurm")[0]
    assert "x 2 processes" in (Path(job["folder"]) / f"{job['job_id']}_0_log.out").read_text()
    (tmp_path / "local").mkdir()
    write_spec(tmp_path / "local", ONE_STAGE)
    assert flowspec(slurm_env, "run", "spec.yaml", cwd=tmp_path / "local").returncode == 0
    a, b = weights(stage_dir(tmp_path / "slurm", "toy", "pretrain")), weights(stage_dir(tmp_path / "local", "toy", "pretrain"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 2e-4


@pytest.mark.slow  # the two headline chains as SLURM jobs (about 4 minutes): with the slow tests
@pytest.mark.parametrize("name,stages", [("sdxl_like", ("pretrain", "sft", "dpo", "subject_lora", "lcm")),
                                         pytest.param("sd3_like", ("pretrain", "grpo", "reflow"), marks=pytest.mark.extended)])
def test_a_headline_smoke_chain_runs_every_stage_as_chained_jobs(slurm_env, tmp_path, root, name, stages, smoke_vae):
    smoke_vae(tmp_path, name)  # the autoencoder stage finished (trained once per session): its jobs are the rest
    out = flowspec(slurm_env, "run", str(root / f"specs/{name}.yaml"), "--profile", "smoke", "--executor", "slurm",
                   "--wait", cwd=tmp_path, timeout=1200)
    assert out.returncode == 0, out.stdout + out.stderr
    submitted = jobs(tmp_path, name)
    assert [job["stage"] for job in submitted] == list(stages)
    for stage in stages:
        assert (stage_dir(tmp_path, name, stage) / "DONE").exists(), stage
    assert (stage_dir(tmp_path, name, stages[-1]) / "distill_report.json").exists()
