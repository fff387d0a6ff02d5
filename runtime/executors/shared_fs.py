"""Before any job is queued: the compute nodes must see the run folder.

A job reads its call (submitit's pickle) from the run folder and writes its logs, checkpoints and exported
model there, so a run folder on the submitting machine's own disk fails every job, with logs nobody can read.
One short `srun` per partition the stages ask for (one task on each of as many nodes as the largest stage
uses) reads a token written here; a node that does not find it is named in the refusal.
"""
from __future__ import annotations

import shlex
import subprocess
import uuid
from pathlib import Path

from ...compiler import Issue, Location, SpecError
from ...compiler.plan import StagePlan
from ...schemas.executor import Slurm

# srun --immediate: with no node free at once the jobs are queued unchecked (with a note) rather than waiting.
PROBE_SECONDS = 20
POLICY_KEYS = ("partition", "account", "qos", "constraint")


def check_run_folder(root: Path, stages: list[tuple[StagePlan, Slurm]]) -> None:
    """Refuse (positioned at the first stage on a partition that cannot see it) a run folder the nodes do not see."""
    if not stages:
        return
    token = root / "slurm" / f".visible-{uuid.uuid4().hex}"
    token.parent.mkdir(parents=True, exist_ok=True)
    nonce = uuid.uuid4().hex
    token.write_text(nonce)
    try:
        for stage_plan, block, nodes in _by_partition(stages):
            unseen = _probe(token, nonce, block, nodes)
            if unseen:
                where = f" (partition {block.partition})" if block.partition else ""
                raise SpecError([Issue(Location.parse(stage_plan.loc), f"stages.{stage_plan.name}.executor",
                                       f"the run folder {root.resolve()} is not visible from compute node(s) "
                                       f"{', '.join(unseen)}{where}: the jobs read and write it there. Put output_dir "
                                       "on a filesystem the nodes share, or run from a folder on one")])
    finally:
        token.unlink(missing_ok=True)


def _by_partition(stages: list[tuple[StagePlan, Slurm]]) -> list[tuple[StagePlan, Slurm, int]]:
    """One probe per distinct (partition, account, qos, constraint), on as many nodes as its largest stage."""
    groups: dict[tuple, tuple[StagePlan, Slurm, int]] = {}
    for stage_plan, block in stages:
        key = tuple(getattr(block, k) for k in POLICY_KEYS)
        first = groups.get(key, (stage_plan, block, 0))
        groups[key] = (first[0], first[1], max(first[2], block.nodes))
    return list(groups.values())


def _probe(token: Path, nonce: str, block: Slurm, nodes: int) -> list[str]:
    """The nodes (hostnames) that do not read `nonce` from `token`; none when the probe could not run."""
    path = shlex.quote(str(token.resolve()))
    script = f'if [ "$(cat {path} 2>/dev/null)" = {nonce} ]; then echo "seen $(hostname)"; ' \
             f'else echo "unseen $(hostname)"; fi'
    policy = [f"--{k}={getattr(block, k)}" for k in POLICY_KEYS if getattr(block, k) is not None]
    command = ["srun", f"--nodes={nodes}", f"--ntasks={nodes}", "--ntasks-per-node=1", "--cpus-per-task=1",
               "--time=1", f"--immediate={PROBE_SECONDS}", "--job-name=flowspec.check-run-folder", "--quiet",
               *policy, "sh", "-c", script]
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=PROBE_SECONDS + 60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return _unchecked(token, str(exc))
    lines = [line.split(maxsplit=1) for line in out.stdout.splitlines()]
    answers = {host: state for state, host in (l for l in lines if len(l) == 2 and l[0] in ("seen", "unseen"))}
    if not answers:
        return _unchecked(token, out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"srun {out.returncode}")
    return sorted(host for host, state in answers.items() if state == "unseen")


def _unchecked(token: Path, reason: str) -> list[str]:
    print(f"[slurm] could not check that the compute nodes see {token.parent.parent} ({reason}); "
          "the jobs are queued unchecked", flush=True)
    return []
