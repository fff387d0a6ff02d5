"""Whether SLURM can be reached from this machine, asked before anything is built or submitted.

Three things can be missing, each with its own one-line answer: SLURM's client commands (not on PATH:
a laptop, or a login node without the module loaded), its configuration (SLURM_CONF names no file, or
there is none where SLURM looks), and its controller (down, or unreachable from here: `scontrol ping`
answers within milliseconds either way, where squeue and sbatch wait ~9 s before failing).
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ...compiler import Issue, Location, SpecError

DEFAULT_CONF = Path("/etc/slurm/slurm.conf")
DEFAULT_PORT = 6817
# Past SLURM's own retries (MessageTimeout, 10 s by default, a few times over) a command that still has
# not answered never will.
COMMAND_TIMEOUT_S = 120
CLUSTER_SCRIPT = "scripts/slurm-cluster.sh"  # the project's one-machine test cluster


class SlurmUnavailable(SpecError):
    """SLURM could not be asked: a command is not installed, or it failed (e.g. its controller does not
    answer). A user error about this machine, not the spec: the CLI prints it as one line, exit 2.
    `missing` tells the two apart: a controller may answer again, a missing command will not appear."""

    def __init__(self, message: str, missing: bool, where: str = "SLURM", key: str = ""):
        super().__init__([Issue(Location.parse(where), key, message)])
        self.message, self.missing = message, missing

    @property
    def one_line(self) -> str:
        return str(self.issues[0])

    def at(self, where: str, key: str = "") -> "SlurmUnavailable":
        """The same error, positioned where SLURM was asked for (a spec key, a flag, a run's record)."""
        return SlurmUnavailable(self.message, self.missing, where, key)


@dataclass(frozen=True)
class Controller:
    """Where the configuration says slurmctld listens, for messages (no SLURM library reads it here)."""

    conf: str
    hosts: tuple[str, ...]
    port: int

    def __str__(self) -> str:
        hosts = ", ".join(f"{host}:{self.port}" for host in self.hosts) or f"no SlurmctldHost, port {self.port}"
        return f"{hosts} (SlurmctldHost in {self.conf})"


def config_file() -> Path:
    """The slurm.conf clients read: the one SLURM_CONF names, else SLURM's default place."""
    named = os.environ.get("SLURM_CONF")
    return Path(named) if named else DEFAULT_CONF


def controller() -> Controller | None:
    """SlurmctldHost (or the older ControlMachine/ControlAddr) and SlurmctldPort of the configuration."""
    path = config_file()
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    hosts, port = [], DEFAULT_PORT
    for line in text.splitlines():
        key, _, value = line.split("#", 1)[0].strip().partition("=")
        key, value = key.strip().lower(), value.strip()
        if key in ("slurmctldhost", "controlmachine"):
            # "vm(127.0.0.1)": the host name, then the address to reach it at
            name, _, address = value.partition("(")
            hosts.append(address.rstrip(")") or name)
        elif key == "slurmctldport" and re.fullmatch(r"\d+(-\d+)?", value):
            port = int(value.split("-")[0])
    return Controller(str(path), tuple(hosts), port)


def not_installed(names: list[str]) -> str:
    listed = ", ".join(f"`{name}`" for name in names)
    return (f"SLURM's {listed} {'is' if len(names) == 1 else 'are'} not in any folder of $PATH: this machine is not a "
            "SLURM login node (or SLURM's client commands are not installed or loaded here)")


def no_configuration() -> str | None:
    """Why clients would find no configuration, or None when they may (a file, or a configless cluster)."""
    path = config_file()
    if "SLURM_CONF" in os.environ and not path.is_file():
        return f"SLURM's configuration is missing: SLURM_CONF={os.environ['SLURM_CONF']} names no file"
    return None


def check(commands: tuple[str, ...], instead: str) -> None:
    """Raise SlurmUnavailable (unpositioned: callers add where SLURM was asked for) unless every command
    is installed, the configuration exists and the controller answers `scontrol ping`. `instead` says
    what the user can do without SLURM."""
    missing = [name for name in dict.fromkeys((*commands, "scontrol")) if shutil.which(name) is None]
    if missing:
        raise SlurmUnavailable(f"{not_installed(missing)}; {instead}", missing=True)
    reason = no_configuration()
    if reason:
        raise SlurmUnavailable(f"{reason}; set it to the cluster's slurm.conf, or {instead}", missing=True)
    ping = run_quietly(["scontrol", "ping"])
    said = words(ping.stdout + "\n" + ping.stderr)
    if ping.returncode == 0 and " DOWN" not in said:
        return
    if "fetch_config" in said:
        path = config_file()
        raise SlurmUnavailable(f"SLURM's configuration is missing: SLURM_CONF is not set, {path} does not exist and "
                               "no DNS SRV record names a controller (`scontrol ping`: fetch_config: DNS SRV lookup "
                               f"failed); set SLURM_CONF to the cluster's slurm.conf, or {instead}", missing=True)
    raise SlurmUnavailable(f"the SLURM controller does not answer: {controller_words(said)}; ask the cluster's "
                           f"admins or retry later, or {instead}", missing=False)


def words(output: str) -> str:
    """A command's message in one line: without its banners (rows of asterisks) and program prefixes."""
    lines = [line.strip().removeprefix("scontrol: ").removeprefix("error: ") for line in output.splitlines()]
    return "; ".join(line for line in lines if line.strip("* ") and "RESTORE SLURMCTLD" not in line)


def controller_words(said: str) -> str:
    where = controller()
    return f"`scontrol ping` says \"{said or 'nothing'}\"" + (f"; the configuration puts it at {where}" if where else "")


def run_quietly(command: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(command, 124, "", f"no answer within {COMMAND_TIMEOUT_S} s")


def what_to_check(program: str) -> str:
    """After a SLURM command failed: which service to look at, with the controller's address."""
    if program == "sacct":
        return ("SLURM's accounting did not answer, so the jobs' states are unknown: check that slurmdbd is up "
                "(or ask the cluster's admins) and try again")
    where = controller()
    at = f" at {where}" if where else ""
    return (f"SLURM did not answer, so the jobs' states are unknown: check that its controller{at} is up "
            "(`scontrol ping`) and try again")


def local_instead(source: str, profiles: list[str]) -> str:
    """What a user without SLURM can run instead: the same spec here (its smoke profile, where it has one),
    or the project's one-machine test cluster."""
    command = shlex.join(["flowspec", "run", source, "--executor", "local"])
    smoke = " (add `--profile smoke` for the version sized for one machine)" if "smoke" in profiles else ""
    return (f"run the stages on this machine with `{command}`{smoke}, or start a one-machine test cluster with "
            f"the project's `{CLUSTER_SCRIPT} start`")
