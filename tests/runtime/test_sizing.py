"""A local run of a stage sized for more than this machine: what the spec declares against what is here and
the time here are printed before anything is built; over an hour, a terminal is asked and anything else
needs --yes."""
import os
import pty
import select
import signal
import subprocess
import sys
import time

import pytest

from flowspec.compiler import SpecError, compile_spec
from flowspec.runtime.executors import sizing
from flowspec.runtime.executors.sizing import CONFIRM_ABOVE_S, PROBE_SHARE, Here, check_size, describe, duration

HEADLINE = "specs/sdxl_like.yaml"
LONG_QUICKSTART = "stages.pretrain.steps=100000"


def never_asked(prompt: str) -> str:
    raise AssertionError(f"asked {prompt!r}")


@pytest.mark.slow  # the headline spec compiled and estimated: about 20 s
def test_a_non_terminal_run_of_the_headline_spec_without_yes_is_refused_before_anything_is_built(tmp_path, root):
    (tmp_path / "specs").mkdir()
    (tmp_path / HEADLINE).write_text((root / HEADLINE).read_text())
    out = subprocess.run([sys.executable, "-m", "flowspec.cli", "run", HEADLINE, "--stage", "pretrain", "--executor",
                          "local"], cwd=tmp_path, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    # --stage pretrain runs the autoencoder stage it reads first: both are announced, in order
    assert out.stdout.startswith("[vae] the spec sizes this stage for 1 node x 8 x h100 (slurm); here: 1 process "
                                 f"on a CPU with {os.cpu_count()} cores, measured "), out.stdout
    assert "\n[pretrain] the spec sizes this stage for 4 nodes x 8 x h100 (slurm)" in out.stdout
    assert "(200,000 steps): about " in out.stdout and "years here (the plan: 994 GPU-hours on 32 x h100)" in out.stdout
    line = (root / HEADLINE).read_text().splitlines().index("  kind: slurm") + 1
    assert out.stderr.startswith(f"{HEADLINE}:{line}:3: executor: refused without --yes (not on a terminal, so nobody "
                                 "was asked): vae (about "), out.stderr
    assert "(--executor slurm), try the spec's version sized for one machine (--profile smoke)" in out.stderr
    assert not (tmp_path / "runs").exists()


def test_the_time_here_is_the_plans_flops_over_the_measured_throughput(root, monkeypatch, capsys):
    slow = Here("cpu", "a slow CPU", 1, tflops=1e-3)
    monkeypatch.setattr(sizing, "measure_here", lambda devices: slow)
    plan = compile_spec(str(root / "specs/quickstart.yaml"))
    from flowspec.runtime.estimate import estimate_stage

    flops = estimate_stage(plan, plan.stage("pretrain")).train_flops
    seconds = flops / (1e-3 * 1e12 * PROBE_SHARE)
    assert seconds > CONFIRM_ABOVE_S
    with pytest.raises(SpecError, match="refused without --yes"):
        check_size(plan, 1, yes=False, interactive=False, ask=never_asked)
    assert f"{flops:.3g} training FLOPs (600 steps): about {duration(seconds)} here" in capsys.readouterr().out
    monkeypatch.setattr(sizing, "measure_here", lambda devices: Here("cpu", "a fast CPU", 1, tflops=flops / 1e12))
    check_size(plan, 1, yes=False, interactive=False, ask=never_asked)  # seconds, on a machine the spec declares
    assert capsys.readouterr().out == ""


def test_yes_starts_without_asking_and_a_terminal_is_asked(root, capsys):
    plan = compile_spec(str(root / "specs/quickstart.yaml"), None, [LONG_QUICKSTART])
    check_size(plan, 1, yes=True, interactive=True, ask=never_asked)
    assert "[pretrain] the spec sizes this stage for 1 x cpu (local)" in capsys.readouterr().out
    asked = []
    check_size(plan, 1, yes=False, interactive=True, ask=lambda prompt: asked.append(prompt) or "y")
    assert asked and asked[0].startswith("Start pretrain (about ") and asked[0].endswith("on this machine? [y/N] ")
    with pytest.raises(SpecError, match="executor: not started; run it on a cluster"):
        check_size(plan, 1, yes=False, interactive=True, ask=lambda prompt: "")


def test_what_the_spec_declares_is_kept_through_executor_local(root):
    plan = compile_spec(str(root / HEADLINE), executor="local")
    assert plan.spec_stage("pretrain").executor.kind == "local"
    assert describe(plan.declared_executor("pretrain")) == "4 nodes x 8 x h100 (slurm)"
    assert describe(plan.declared_executor("subject_lora")) == "1 node x 8 x h100 (slurm)"
    plan = compile_spec(str(root / "specs/quickstart.yaml"), executor="local", sets=["executor.devices=2"])
    assert plan.declared == {} and describe(plan.declared_executor("pretrain")) == "2 x cpu (local)"
    here = Here("cpu", "a CPU", 2, 0.1)
    assert not sizing.sized_for_more(plan.declared_executor("pretrain"), here)
    assert sizing.sized_for_more(plan.declared_executor("pretrain"), Here("cpu", "a CPU", 1, 0.1))
    assert sizing.sized_for_more(compile_spec(str(root / HEADLINE)).declared_executor("pretrain"), here)


def read_until(fd: int, text: str, timeout: float = 60) -> str:
    """What the terminal shows until `text`; fails after `timeout` s in all, however much else it shows."""
    seen, deadline = "", time.monotonic() + timeout
    while text not in seen:
        ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
        assert ready, f"no {text!r} within {timeout} s; saw {seen[-2000:]!r}"
        try:
            chunk = os.read(fd, 4096).decode(errors="replace")
        except OSError:  # the child closed the terminal
            break
        assert chunk, f"the terminal closed before {text!r}; saw {seen!r}"
        seen += chunk
    return seen


@pytest.mark.parametrize("answer", ["n", "y"])
def test_on_a_terminal_the_user_answers(tmp_path, root, answer):
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs/quickstart.yaml").write_text((root / "specs/quickstart.yaml").read_text())
    parent, child = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "flowspec.cli", "run", "specs/quickstart.yaml", "--set",
                             LONG_QUICKSTART], cwd=tmp_path, stdin=child, stdout=child, stderr=child,
                            start_new_session=True)
    os.close(child)
    try:
        assert "[y/N]" in read_until(parent, "[y/N]")
        os.write(parent, f"{answer}\n".encode())
        if answer == "n":
            assert "not started" in read_until(parent, "flowspec run: 1 error")
            assert proc.wait(timeout=60) == 2 and not (tmp_path / "runs").exists()
        else:
            read_until(parent, "[pretrain] pretrain, 100000 steps on cpu")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        os.close(parent)
