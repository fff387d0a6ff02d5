"""A real one-node SLURM cluster for the `slurm` tests, started by scripts/slurm-cluster.sh.

Without root and apt the tests are skipped, with the reason; where FLOWSPEC_REQUIRE_SLURM=1 (CI sets
it in .ci/run) a cluster that cannot be started is an error instead, so CI always tests the real thing.
"""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ..conftest import unavailable

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "slurm-cluster.sh"


def _unavailable(reason: str):
    unavailable("FLOWSPEC_REQUIRE_SLURM", "local SLURM cluster", reason, "scripts/slurm-cluster.sh start needs root and apt")


@pytest.fixture(scope="session")
def slurm_env():
    """Environment for subprocesses that talk to the cluster (SLURM_CONF); starts it if needed."""
    if shutil.which("apt-get") is None and shutil.which("slurmctld") is None:
        _unavailable("neither apt-get nor slurmctld is on PATH")
    if os.geteuid() != 0:
        _unavailable("not running as root")
    was_up = subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True, text=True).returncode == 0
    started = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=900)
    if started.returncode != 0:
        _unavailable(f"scripts/slurm-cluster.sh start failed: {started.stderr[-2000:]}")
    exports = subprocess.run(["bash", str(SCRIPT), "env"], capture_output=True, text=True, check=True).stdout
    before = dict(os.environ)
    for line in exports.splitlines():  # this process too: submitit's calls in tests read SLURM_CONF
        key, _, value = line.removeprefix("export ").partition("=")
        os.environ[key] = value.strip("'\"")
    yield dict(os.environ)
    os.environ.clear()
    os.environ.update(before)
    if not was_up:
        subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, text=True, timeout=120)

