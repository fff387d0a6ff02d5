"""SLURM's real client commands against a controller that is down: the configuration names a controller
nobody answers for (a copy of the test cluster's slurm.conf with a port nothing listens on), so `run`,
`status` and `cancel` say so in one line, with the controller's address from that configuration."""
import socket
from pathlib import Path

import pytest

from flowspec.runtime.executors.slurm import Submitted, write_record

from ..runtime.helpers import TOY, write_spec
from .test_slurm import SLURM, flowspec

pytestmark = pytest.mark.slurm


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def controller_down(slurm_env: dict, tmp_path: Path) -> tuple[dict, str]:
    conf = tmp_path / "etc" / "slurm.conf"
    conf.parent.mkdir()
    port = unused_port()
    text = Path(slurm_env["SLURM_CONF"]).read_text()
    conf.write_text(text + f"\nSlurmctldPort={port}\n")
    host = next(line.split("=", 1)[1].split("(")[0].strip() for line in text.splitlines()
                if line.startswith("SlurmctldHost="))
    return {**slurm_env, "SLURM_CONF": str(conf)}, f"{host}:{port} (SlurmctldHost in {conf})"


def test_run_status_and_cancel_name_a_controller_that_is_down(slurm_env, tmp_path):
    env, where = controller_down(slurm_env, tmp_path)
    write_spec(tmp_path, TOY + SLURM)
    out = flowspec(env, "run", "spec.yaml", cwd=tmp_path, timeout=60)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.startswith("spec.yaml:"), out.stderr
    assert "executor.kind: the SLURM controller does not answer: `scontrol ping` says" in out.stderr
    assert f"is DOWN\"; the configuration puts it at {where}" in out.stderr
    assert "`flowspec run spec.yaml --executor local`" in out.stderr and not (tmp_path / "runs").exists()
    root = tmp_path / "runs" / "toy"
    write_record(root, [Submitted("pretrain", "41", str(tmp_path / "slurm" / "41"), str(root / "pretrain-0"),
                                  "2026-01-01T00:00:00")])
    for command in ("status", "cancel"):
        out = flowspec(env, command, str(root), cwd=tmp_path, timeout=60)
        assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
        assert out.stderr.startswith(f"{root / 'slurm.json'}: the SLURM controller does not answer"), out.stderr
        assert where in out.stderr
