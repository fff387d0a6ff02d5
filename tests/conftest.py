"""Test-wide settings: never touch the network, keep hypothesis bounded on CI's 2 cores."""
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=400, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.yaml"))


def pytest_collection_modifyitems(config, items):
    """Tests that use the local SLURM cluster run last (a stable sort keeps every other order): the
    cluster their fixture installs puts srun and sbatch on PATH, and no unit test may pass only because
    an earlier test left them there."""
    items.sort(key=lambda item: item.get_closest_marker("slurm") is not None or "slurm_env" in item.fixturenames)


def unavailable(variable: str, what: str, reason: str, how: str):
    """A fixture's machine-level prerequisite (a SLURM cluster, a browser) is missing: the test is skipped with the
    reason, or fails where `variable`=1 demands the real thing (CI)."""
    if os.environ.get(variable) == "1":
        pytest.fail(f"{variable}=1 but the {what} is unavailable: {reason}")
    pytest.skip(f"no {what}: {reason} ({how})")


@pytest.fixture
def root() -> Path:
    return ROOT


def run_cli(*args: str, cwd: Path = ROOT):
    """The real console entry point in a subprocess: (exit code, stdout, stderr)."""
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "flowspec.cli", *args], cwd=cwd, capture_output=True, text=True)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="session")
def smoke_vae(tmp_path_factory):
    """`into(cwd, name)`: the trained autoencoder stage of specs/<name>.yaml's smoke profile, copied to where a run
    of it from `cwd` finds it finished (its hash is the same), so that the smoke tests of later stages train only
    those. Trained once per spec and session, by the real `flowspec run --stage vae`."""
    import shutil
    import subprocess

    trained: dict[str, Path] = {}

    def into(cwd: Path, name: str) -> Path:
        if name not in trained:
            folder = tmp_path_factory.mktemp(f"smoke-vae-{name}")
            out = subprocess.run([sys.executable, "-m", "flowspec.cli", "run", str(ROOT / f"specs/{name}.yaml"),
                                  "--profile", "smoke", "--stage", "vae"], cwd=folder, capture_output=True, text=True,
                                 timeout=600)
            assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
            (trained[name],) = (folder / "runs" / name).glob("vae-*")
        target = cwd / "runs" / name / trained[name].name
        shutil.copytree(trained[name], target)
        return target

    return into
