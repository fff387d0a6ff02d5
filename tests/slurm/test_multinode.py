"""Several nodes on one machine: scripts/slurm-cluster.sh start --nodes N (each node a slurmd in a network
namespace of its own, on a bridge), a stage across two nodes (one rank per task, gloo over the bridge) ending
with the weights of one process, and an afterok chain mixing one- and two-node stages."""
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from ..runtime.helpers import TOY, stage_dir, weights, write_spec
from ..runtime.test_distributed import ONE_STAGE_TOY
from .conftest import SCRIPT
from .test_slurm import flowspec, jobs, queued, wait_for

pytestmark = [pytest.mark.slurm, pytest.mark.slow]  # three cluster restarts and three jobs: about 2 minutes

SLURM = "executor: {kind: slurm, gpus_per_node: 0, cpus_per_task: 1, timeout_min: 10}\n"


def cluster(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=900)


def namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return sorted(line.split()[0] for line in out.splitlines() if line.startswith("flowspec-node"))


def srun_hostnames(env, nodes: int) -> list[str]:
    out = subprocess.run(["srun", f"-N{nodes}", f"-n{nodes}", "hostname"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return sorted(out.stdout.split())


@pytest.fixture(scope="module")
def two_nodes(slurm_env):
    """The session's cluster restarted with two nodes; one node again afterwards, for the tests after these."""
    started = cluster("start", "--nodes", "2")
    if started.returncode == 3 and os.environ.get("FLOWSPEC_REQUIRE_SLURM") != "1":
        pytest.skip(f"no network namespaces here: {started.stderr.strip()}")
    assert started.returncode == 0, started.stderr
    yield slurm_env
    assert cluster("start").returncode == 0


def test_three_nodes_are_made_with_their_own_names_and_stop_removes_them(two_nodes):
    assert cluster("start", "--nodes", "3").returncode == 0
    assert namespaces() == ["flowspec-node1", "flowspec-node2", "flowspec-node3"]
    assert srun_hostnames(two_nodes, 3) == ["flowspec-node1", "flowspec-node2", "flowspec-node3"]
    again = cluster("start", "--nodes", "3")
    assert again.returncode == 0 and "already running" in again.stderr  # idempotent
    assert cluster("stop").returncode == 0
    assert namespaces() == []
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    assert "flowspec-" not in links
    assert "flowspec-node" not in Path("/etc/hosts").read_text()
    assert cluster("start", "--nodes", "2").returncode == 0
    assert srun_hostnames(two_nodes, 2) == ["flowspec-node1", "flowspec-node2"]


def test_a_two_node_stage_ends_with_the_weights_of_one_process(two_nodes, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    for folder in (one, two):
        folder.mkdir()
    write_spec(one, ONE_STAGE_TOY)
    out = flowspec(two_nodes, "run", "spec.yaml", cwd=one)
    assert out.returncode == 0, out.stderr
    write_spec(two, ONE_STAGE_TOY + SLURM.replace("kind: slurm,", "kind: slurm, nodes: 2,"))
    out = flowspec(two_nodes, "run", "spec.yaml", "--wait", cwd=two)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "(2 node(s) x 1 task(s))" in out.stdout
    log = Path(jobs(two)[0]["folder"]).glob("*_0_log.out")
    assert any("x 2 processes" in p.read_text() for p in log)
    a, b = weights(stage_dir(one, "toy", "pretrain")), weights(stage_dir(two, "toy", "pretrain"))
    worst = max((a[k].double() - b[k].double()).abs().max().item() for k in a)
    assert worst < 2e-4, worst  # the bound of the two-process test (tests/runtime/test_distributed.py)


@pytest.mark.extended  # afterok chains: the sdxl_like SLURM chain; two-node stages: the tests above and below
def test_an_afterok_chain_mixes_one_and_two_node_stages(two_nodes, tmp_path):
    spec = TOY + SLURM
    spec = spec.replace("  - {name: finetune, kind: finetune, from: pretrain, steps: 20",
                        "  - {name: finetune, kind: finetune, from: pretrain, steps: 20, executor: {nodes: 2}")
    write_spec(tmp_path, spec)
    out = flowspec(two_nodes, "run", "spec.yaml", "--wait", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[pretrain] submitted job" in out.stdout and "(1 node(s) x 1 task(s))" in out.stdout
    assert "(2 node(s) x 1 task(s))" in out.stdout
    first, second = jobs(tmp_path)
    script = Path(second["folder"]) / f"{second['job_id']}_submission.sh"
    assert f"--dependency=afterok:{first['job_id']}" in script.read_text() and "--nodes=2" in script.read_text()
    for stage in ("pretrain", "finetune"):
        assert (stage_dir(tmp_path, "toy", stage) / "DONE").exists()


# Long enough that a fault sent once the first checkpoint exists lands mid-training.
LONG_TWO_NODES = (ONE_STAGE_TOY.replace("steps: 60}", "steps: 1500}").replace("checkpoint: {every: 10, keep: 2}",
                                                                          "checkpoint: {every: 50, keep: 2}")
                  + SLURM.replace("kind: slurm,", "kind: slurm, nodes: 2,"))


def start_both(env, tmp_path, plain_first: bool = False) -> tuple[Path, Path]:
    """The same long two-node stage twice: one to disturb, one to compare its final weights with (finished
    first when the fault takes a whole node, which would take the other job's rank with it)."""
    plain, hit = tmp_path / "plain", tmp_path / "hit"
    for folder in (plain, hit):
        folder.mkdir()
        write_spec(folder, LONG_TWO_NODES)
        wait = ["--wait"] if plain_first and folder == plain else []
        assert flowspec(env, "run", "spec.yaml", *wait, cwd=folder).returncode == 0
    wait_for(lambda: list(hit.glob("runs/toy/pretrain-*/checkpoints/step-*.pt")), "a first checkpoint")
    return plain, hit


def rank_pids(node: str, job_id: str) -> list[int]:
    """The flowspec task processes (submitit's entry point) of job `job_id` in a node's namespace."""
    out = subprocess.run(["ip", "netns", "pids", node], capture_output=True, text=True).stdout.split()
    found = []
    for pid in out:
        try:
            command, environ = (Path(f"/proc/{pid}/{f}").read_bytes() for f in ("cmdline", "environ"))
        except OSError:
            continue
        if b"submitit.core._submit" in command and f"SLURM_JOB_ID={job_id}\0".encode() in environ:
            found.append(int(pid))
    return found


def finish_and_compare(env, plain: Path, hit: Path) -> str:
    """Follow the disturbed stage to its end (SLURM may have requeued it); run it again if its job failed (it
    resumes from its last checkpoint); then compare its weights with the undisturbed run's."""
    if flowspec(env, "status", "runs/toy", "--wait", cwd=hit).returncode != 0:
        out = flowspec(env, "run", "spec.yaml", "--wait", cwd=hit)
        assert out.returncode == 0, out.stdout + out.stderr
    assert flowspec(env, "status", "runs/toy", "--wait", cwd=plain).returncode == 0
    logs = "".join(p.read_text() for p in hit.glob("runs/toy/slurm/*/*_0_log.out"))
    assert "resumed from step" in logs
    a, b = weights(stage_dir(plain, "toy", "pretrain")), weights(stage_dir(hit, "toy", "pretrain"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    return logs


def test_a_killed_rank_fails_the_job_naming_it_and_a_rerun_resumes_exactly(two_nodes, tmp_path):
    plain, hit = start_both(two_nodes, tmp_path)
    job = jobs(hit)[0]
    victims = rank_pids("flowspec-node2", job["job_id"])
    assert victims, "no rank runs on flowspec-node2"
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    started = time.monotonic()
    wait_for(lambda: not queued([job["job_id"]]), "the job to end", timeout=120)
    assert time.monotonic() - started < 60  # srun ends the other rank: nobody waits in a collective
    status = flowspec(two_nodes, "status", "runs/toy", cwd=hit)
    assert "FAILED" in status.stdout, status.stdout
    err = (Path(job["folder"]) / f"{job['job_id']}_0_log.err").read_text()
    assert "flowspec-node2: task 1: Killed" in err
    finish_and_compare(two_nodes, plain, hit)


@pytest.mark.extended  # the killed rank's test covers the failed job, its name and the exact rerun
def test_a_node_that_fails_is_named_and_the_stage_resumes_exactly(two_nodes, tmp_path):
    plain, hit = start_both(two_nodes, tmp_path, plain_first=True)
    assert cluster("node-down", "2").returncode == 0
    try:
        # SLURM requeues the job (NODE_FAIL) or ends it FAILED, as srun or the controller notices first
        wait_for(lambda: "flowspec-node2" in flowspec(two_nodes, "status", "runs/toy", cwd=hit).stdout,
                 "status to name the failed node", timeout=90)
    finally:
        assert cluster("node-up", "2").returncode == 0
    finish_and_compare(two_nodes, plain, hit)


def test_a_preempted_two_node_job_checkpoints_at_the_signal_requeues_and_resumes_exactly(two_nodes, tmp_path):
    from submitit.slurm.slurm import SlurmJob

    plain, hit = start_both(two_nodes, tmp_path, plain_first=True)
    job = jobs(hit)[0]
    SlurmJob(folder=job["folder"], job_id=job["job_id"])._interrupt()  # SIGTERM, then USR2, to every task
    logs = finish_and_compare(two_nodes, plain, hit)
    assert "requeueing" in logs and logs.count("Starting with JobEnvironment") == 2, logs
    step = int(logs.split("checkpoint at step ")[1].split()[0])
    assert f"resumed from step {step}" in logs  # the signal's own checkpoint, not an older one


def test_a_run_folder_the_nodes_cannot_see_is_refused_before_any_job_is_queued(two_nodes, tmp_path):
    # The cluster's node-local folder: a tmpfs of each node's own, an ordinary folder here.
    local = Path(two_nodes["FLOWSPEC_SLURM_NODE_LOCAL"]) / tmp_path.name
    local.mkdir(parents=True)
    try:
        write_spec(local, ONE_STAGE_TOY + SLURM.replace("kind: slurm,", "kind: slurm, nodes: 2,"))
        out = flowspec(two_nodes, "run", "spec.yaml", cwd=local)
        assert out.returncode == 2, out.stdout + out.stderr
        assert (f"stages.pretrain.executor: the run folder {local}/runs/toy is not visible from compute node(s) "
                "flowspec-node1, flowspec-node2: the jobs read and write it there") in out.stderr
        assert "spec.yaml:" in out.stderr and "Traceback" not in out.stderr
        assert not (local / "runs" / "toy" / "slurm.json").exists()  # nothing was queued
        assert not list((local / "runs" / "toy" / "slurm").glob(".visible-*"))  # the token is gone
    finally:
        shutil.rmtree(local)
