"""Several nodes on one machine: scripts/slurm-cluster.sh start --nodes N (each node a slurmd in a network
namespace of its own, on a bridge), a stage across two nodes (one rank per task, gloo over the bridge) ending
with the weights of one process, and an afterok chain mixing one- and two-node stages."""
import os
import subprocess
from pathlib import Path

import pytest

from ..runtime.helpers import TOY, stage_dir, weights, write_spec
from ..runtime.test_distributed import ONE_STAGE_TOY
from .conftest import SCRIPT
from .test_slurm import flowspec, jobs

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
