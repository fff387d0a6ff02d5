"""`flowspec run` of a spec that asks for SLURM, on a machine where SLURM cannot be reached: one line at what
asked for it, naming what is missing and what to run instead, exit 2, nothing built or written.

The machine is a laptop's: a PATH that holds Python and no SLURM command, whatever this machine has.
(tests/slurm/test_reach.py runs SLURM's real commands against a controller that is down.)"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .test_follow import UP, answers

HEADLINE = "specs/sdxl_like.yaml"


def laptop(tmp_path: Path, root: Path, **commands: str) -> dict:
    """A copy of the shipped specs and an environment whose PATH has no SLURM (plus the given stand-ins)."""
    shutil.copytree(root / "specs", tmp_path / "specs")
    folder = tmp_path / "bin"
    folder.mkdir()
    for name, script in commands.items():
        (folder / name).write_text(script)
        (folder / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM")}
    return {**env, "PATH": str(folder)}


def flowspec(tmp_path: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flowspec.cli", *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL)


def test_the_headline_spec_on_a_laptop_says_slurm_is_missing_at_its_executor_line(tmp_path, root):
    env = laptop(tmp_path, root)
    out = flowspec(tmp_path, env, "run", HEADLINE, "--stage", "pretrain")
    assert out.returncode == 2 and "Traceback" not in out.stderr and out.stderr.count("\n") == 1, out.stderr
    line = (root / HEADLINE).read_text().splitlines().index("  kind: slurm") + 1
    assert out.stderr.startswith(f"{HEADLINE}:{line}:3: executor.kind: SLURM's `sbatch`, `srun`, `squeue`, `sacct`, "
                                 "`scontrol` are not in any folder of $PATH"), out.stderr
    for instead in (f"`flowspec run {HEADLINE} --executor local`", "--profile smoke", "scripts/slurm-cluster.sh start"):
        assert instead in out.stderr
    assert not (tmp_path / "runs").exists()


def test_the_whole_headline_chain_on_a_laptop_reports_missing_slurm_alone(tmp_path, root):
    """Every stage kind of the headline chain has its runtime: what this machine lacks is the one error."""
    out = flowspec(tmp_path, laptop(tmp_path, root), "run", HEADLINE)
    lines = out.stderr.splitlines()
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert len(lines) == 1 and "executor.kind: SLURM's `sbatch`" in lines[0], lines  # a single error, no count line


def test_only_the_missing_commands_are_named(tmp_path, root):
    env = laptop(tmp_path, root, sbatch=UP, squeue=UP, scontrol=UP)
    out = flowspec(tmp_path, env, "run", "specs/quickstart.yaml", "--executor", "slurm")
    assert out.returncode == 2
    assert out.stderr.startswith("--executor slurm: SLURM's `srun`, `sacct` are not in any folder of $PATH"), out.stderr


def test_no_configuration_names_the_variable_to_set(tmp_path, root):
    """Commands installed, no slurm.conf where SLURM looks and no DNS record: scontrol's own answer."""
    fetch = answers(stderr="scontrol: error: fetch_config: DNS SRV lookup failed\\nscontrol: fatal: Could not "
                           "establish a configuration source", code=1)
    env = laptop(tmp_path, root, sbatch=UP, srun=UP, squeue=UP, sacct=UP, scontrol=fetch)
    out = flowspec(tmp_path, env, "run", "specs/quickstart.yaml", "--executor", "slurm")
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "SLURM's configuration is missing: SLURM_CONF is not set, /etc/slurm/slurm.conf does not exist" in out.stderr
    assert "set SLURM_CONF to the cluster's slurm.conf" in out.stderr
    env["SLURM_CONF"] = str(tmp_path / "missing.conf")
    out = flowspec(tmp_path, env, "run", "specs/quickstart.yaml", "--executor", "slurm")
    assert f"SLURM_CONF={tmp_path / 'missing.conf'} names no file" in out.stderr


def test_status_and_cancel_of_a_run_never_submitted_need_no_slurm(tmp_path, root):
    env = laptop(tmp_path, root)
    for command in ("status", "cancel"):
        out = flowspec(tmp_path, env, command, HEADLINE)
        assert out.returncode == 2 and "Traceback" not in out.stderr
        assert "runs/sdxl_like: no" in out.stderr and "SLURM submission found" in out.stderr
