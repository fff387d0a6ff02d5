"""Asking SLURM about submitted jobs: its normal answers become job states, and its failures (a command
not installed, a controller that does not answer) become one-line user errors, never an UNKNOWN state.

No cluster runs here: the SLURM commands are tiny scripts on a PATH of their own, each answering with
the text and exit code the real command gives (slurm-client 22.05; tests/slurm runs the real ones)."""
from pathlib import Path

import pytest

from flowspec.cli import main
from flowspec.runtime.executors.follow import SlurmUnavailable, cancel, job_states, status, wait
from flowspec.runtime.executors.slurm import Submitted, write_record

NO_CONTROLLER = "slurm_load_jobs error: Unable to contact slurm controller (connect failure)"
GONE = "slurm_load_jobs error: Invalid job id specified"  # squeue, one job id the controller no longer holds
NO_DATABASE = ("sacct: error: slurm_persist_conn_open_without_init: failed to open persistent connection to "
               "host:localhost:6819: Connection refused\nsacct: error: Problem talking to the database: "
               "Connection refused")
NO_ACCOUNTING = "Slurm accounting storage is disabled"
TOY = """\
flowspec: 1
name: toy
model: {kind: mlp, preset: tiny}
data: {source: {kind: toy2d, distribution: {kind: gaussian_mixture, means: [[-1, 0], [1, 0]], stds: [0.2, 0.2]}}}
train: {global_batch: 8}
stages:
  - {name: pretrain, kind: pretrain, steps: 2}
executor: {kind: local, devices: 2}
"""


def answers(stdout: str = "", stderr: str = "", code: int = 0) -> str:
    """A stand-in for a SLURM command: prints what the real one prints and exits with its code."""
    return f"#!/bin/sh\nprintf '%s' '{stdout}'\nprintf '%s' '{stderr}' >&2\nexit {code}\n"


UP = answers("Slurmctld(primary) at head is UP\n")
DOWN = answers("Slurmctld(primary) at head is DOWN\n*****************************************\n"
               "** RESTORE SLURMCTLD DAEMON TO SERVICE **\n*****************************************\n", code=1)
CONF = "ClusterName=test\nSlurmctldHost=head(10.1.2.3)  # the controller\nSlurmctldPort=6999\n"


def slurm_path(monkeypatch, tmp_path: Path, **commands: str) -> Path:
    """PATH holds only these commands (none: SLURM is not installed), whatever this machine has; where
    SLURM is there at all, a configuration and a controller that answers `scontrol ping` (unless given)."""
    folder = tmp_path / "bin"
    folder.mkdir(parents=True, exist_ok=True)
    if commands:
        commands.setdefault("scontrol", UP)
        (tmp_path / "slurm.conf").write_text(CONF)
        monkeypatch.setenv("SLURM_CONF", str(tmp_path / "slurm.conf"))
    for name, script in commands.items():
        (folder / name).write_text(script)
        (folder / name).chmod(0o755)
    monkeypatch.setenv("PATH", str(folder))
    return folder


def submitted(tmp_path: Path, job_id: str = "41") -> Submitted:
    return Submitted("pretrain", job_id, str(tmp_path / "slurm" / job_id), str(tmp_path / "pretrain-0"),
                     "2026-01-01T00:00:00")


def recorded_run(tmp_path: Path) -> Path:
    root = tmp_path / "runs" / "toy"
    write_record(root, [submitted(tmp_path)])
    return root


def test_without_slurm_installed_status_and_cancel_say_so_in_one_line(monkeypatch, tmp_path, capsys):
    slurm_path(monkeypatch, tmp_path)
    root = recorded_run(tmp_path)
    for command, missing in (("status", "`squeue`, `sacct`, `scontrol` are"),
                             ("cancel", "`squeue`, `sacct`, `scancel`, `scontrol` are")):
        assert main([command, str(root)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert err.startswith(f"{root / 'slurm.json'}: SLURM's {missing} not in any folder of $PATH: this machine is "
                              "not a SLURM login node"), err
        assert f"run `flowspec {command}` on a login node of the cluster" in err


def test_a_controller_that_is_down_is_named_with_its_address_before_anything_is_asked(monkeypatch, tmp_path, capsys):
    never = answers(stderr="squeue and sacct are not asked while the controller is down", code=1)
    slurm_path(monkeypatch, tmp_path, scontrol=DOWN, squeue=never, sacct=never, scancel=never)
    root = recorded_run(tmp_path)
    for command in ("status", "cancel"):
        assert main([command, str(root)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "not asked" not in err
        assert err.startswith(f"{root / 'slurm.json'}: the SLURM controller does not answer: `scontrol ping` says "
                              f"\"Slurmctld(primary) at head is DOWN\"; the configuration puts it at 10.1.2.3:6999 "
                              f"(SlurmctldHost in {tmp_path / 'slurm.conf'})"), err


def test_a_configuration_that_is_not_there_is_named_by_its_variable(monkeypatch, tmp_path, capsys):
    slurm_path(monkeypatch, tmp_path, squeue=answers(), sacct=answers())
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "nowhere.conf"))
    assert main(["status", str(recorded_run(tmp_path))]) == 2
    assert f"SLURM's configuration is missing: SLURM_CONF={tmp_path / 'nowhere.conf'} names no file" in \
        capsys.readouterr().err


def test_a_controller_that_stops_answering_is_an_error_with_squeues_own_words(monkeypatch, tmp_path, capsys):
    slurm_path(monkeypatch, tmp_path, squeue=answers(stderr=NO_CONTROLLER, code=1), sacct=answers())
    with pytest.raises(SlurmUnavailable) as info:
        job_states([submitted(tmp_path)])
    assert not info.value.missing
    root = recorded_run(tmp_path)
    assert main(["status", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"{root / 'slurm.json'}: `squeue -h -o '%i|%T' -j 41` failed (exit 1): " + NO_CONTROLLER)
    assert ("SLURM did not answer, so the jobs' states are unknown: check that its controller at 10.1.2.3:6999 "
            "(SlurmctldHost in") in err and "scontrol ping" in err


def test_a_second_submission_is_refused_while_slurm_cannot_say_whether_the_first_runs(monkeypatch, tmp_path,
                                                                                        capsys):
    """The duplicate submission that slipped through when every job read UNKNOWN."""
    (tmp_path / "spec.yaml").write_text(TOY.replace("{kind: local, devices: 2}", "{kind: slurm, gpus_per_node: 0}"))
    monkeypatch.chdir(tmp_path)
    from flowspec.compiler import compile_spec
    from flowspec.runtime.executors.slurm import run_root

    plan = compile_spec("spec.yaml")
    write_record(run_root(plan), [Submitted("pretrain", "41", str(tmp_path / "slurm" / "41"),
                                            str(Path(plan.stages[0].run_dir).resolve()), "2026-01-01T00:00:00")])
    refuse = answers(stderr="sbatch: error: this test never submits", code=1)
    slurm_path(monkeypatch, tmp_path, squeue=answers(stderr=NO_CONTROLLER, code=1), sacct=answers(),
               sbatch=refuse, srun=refuse)
    assert main(["run", "spec.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("spec.yaml:8:12: executor.kind: `squeue -h -o '%i|%T' -j 41` failed (exit 1): "
                          + NO_CONTROLLER), err
    assert not (tmp_path / "runs" / "toy" / "slurm").exists()


@pytest.mark.parametrize("squeue,sacct,state", [
    (answers("41|RUNNING\n"), answers(stderr=NO_DATABASE, code=1), "RUNNING"),
    (answers(stderr=GONE, code=1), answers("41|COMPLETED\n"), "COMPLETED"),
    (answers(stderr=GONE, code=1), answers("41|CANCELLED by 0\n"), "CANCELLED"),
    (answers(stderr=GONE, code=1), answers(stderr=NO_ACCOUNTING, code=1), "UNKNOWN"),
    (answers(), answers(), "UNKNOWN"),
], ids=["queued", "purged-then-accounting", "cancelled-by-uid", "no-accounting-storage", "not-yet-anywhere"])
def test_the_answers_of_a_working_cluster_are_job_states(monkeypatch, tmp_path, squeue, sacct, state):
    slurm_path(monkeypatch, tmp_path, squeue=squeue, sacct=sacct)
    assert job_states([submitted(tmp_path)]) == {"41": state}


def test_accounting_that_does_not_answer_is_an_error_too(monkeypatch, tmp_path):
    slurm_path(monkeypatch, tmp_path, squeue=answers(stderr=GONE, code=1), sacct=answers(stderr=NO_DATABASE, code=1))
    with pytest.raises(SlurmUnavailable, match="Problem talking to the database: Connection refused. SLURM's "
                                               "accounting did not answer"):
        job_states([submitted(tmp_path)])


def test_wait_asks_again_while_the_controller_is_silent_then_gives_up(monkeypatch, tmp_path, capsys):
    slurm_path(monkeypatch, tmp_path, squeue=answers(stderr=NO_CONTROLLER, code=1), sacct=answers())
    with pytest.raises(SlurmUnavailable, match="Unable to contact slurm controller"):
        wait([submitted(tmp_path)], poll_s=0, patience_s=0)
    assert "asking again every 0 s for up to 0 s" in capsys.readouterr().err
    slurm_path(monkeypatch, tmp_path / "none")
    with pytest.raises(SlurmUnavailable, match="SLURM's `squeue` is not in any folder of \\$PATH"):
        wait([submitted(tmp_path)], poll_s=0, patience_s=3600)  # a missing command will not appear: no waiting


def test_wait_goes_on_once_a_restarted_controller_answers(monkeypatch, tmp_path, capsys):
    once = tmp_path / "failed-once"
    squeue = (f"#!/bin/sh\nif [ -e {once} ]; then printf '41|COMPLETED\\n'; exit 0; fi\n: > {once}\n"
              "printf 'slurm_load_jobs error: Socket timed out on send/recv operation' >&2\nexit 1\n")
    slurm_path(monkeypatch, tmp_path, squeue=squeue, sacct=answers())
    assert wait([submitted(tmp_path)], poll_s=0, patience_s=3600) == 0
    out = capsys.readouterr()
    assert "[pretrain] job 41 COMPLETED" in out.out
    assert out.err.count("Socket timed out on send/recv operation") == 1


def test_cancel_takes_a_job_that_ended_meanwhile_as_ended_and_reports_a_silent_controller(monkeypatch, tmp_path,
                                                                                          capsys):
    root = recorded_run(tmp_path)
    ended = answers(stderr="scancel: error: Kill job error on job id 41: Job/step already completing or completed",
                    code=1)
    slurm_path(monkeypatch, tmp_path, squeue=answers("41|RUNNING\n"), sacct=answers(), scancel=ended)
    assert cancel(root) == 0
    assert "[pretrain] job 41 had already ended" in capsys.readouterr().out
    slurm_path(monkeypatch, tmp_path, scancel=answers(stderr="scancel: error: " + NO_CONTROLLER, code=1))
    assert main(["cancel", str(root)]) == 2
    assert capsys.readouterr().err.startswith(f"{root / 'slurm.json'}: `scancel 41` failed (exit 1): scancel: error: " + NO_CONTROLLER)


def test_status_of_a_run_that_was_never_submitted_needs_no_slurm(monkeypatch, tmp_path, capsys):
    slurm_path(monkeypatch, tmp_path)
    stage = tmp_path / "runs" / "toy" / "pretrain-0"
    stage.mkdir(parents=True)
    (stage / "spec.json").write_text("{}")
    assert status(tmp_path / "runs" / "toy") == 0
    assert "[pretrain] local stopped (flowspec run resumes it)" in capsys.readouterr().out


def test_status_of_a_local_run_gives_each_stage_its_state_step_loss_and_time_left(tmp_path, capsys):
    import fcntl
    import json
    from datetime import timedelta

    from .helpers import TOY as TWO_STAGES, flowspec, stage_dir, write_spec

    write_spec(tmp_path, TWO_STAGES)
    assert flowspec("run", "spec.yaml", cwd=tmp_path).returncode == 0
    root = tmp_path / "runs" / "toy"
    folders = {name: stage_dir(tmp_path, "toy", name) for name in ("pretrain", "finetune")}
    records = {name: [json.loads(line) for line in (f / "metrics.jsonl").read_text().splitlines()]
               for name, f in folders.items()}

    def line(name):
        assert main(["status", str(root)]) == 0
        return next(l for l in capsys.readouterr().out.splitlines() if l.startswith(f"[{name}] "))

    for name, steps in (("pretrain", 60), ("finetune", 20)):
        seconds = json.loads((folders[name] / "results.json").read_text())["seconds"]
        assert line(name) == (f"[{name}] local done step {steps}/{steps} loss {records[name][-1]['loss']:.4f} "
                              f"in {seconds} s  {folders[name]}")
    # The finetune stage as if it were stopped at its second log line, then as if a process held its lock.
    folder, kept = folders["finetune"], records["finetune"][1]
    (folder / "DONE").unlink()
    (folder / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records["finetune"][:2]) + "\n")
    assert line("finetune") == (f"[finetune] local stopped step {kept['step']}/20 loss {kept['loss']:.4f} "
                                f"(flowspec run resumes it)  {folder}")
    with open(folder / ".lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        left = timedelta(seconds=round((20 - kept["step"]) / kept["it_per_s"]))
        assert line("finetune") == (f"[finetune] local running step {kept['step']}/20 loss {kept['loss']:.4f} ETA {left} "
                                    f"at {kept['it_per_s']:.3g} it/s  {folder}")
    assert "local stopped" in line("finetune")  # the lock released: nobody runs it
