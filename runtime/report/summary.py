"""What a finished stage leaves for people to read: the loss curve and report.md."""
from __future__ import annotations

import json
from pathlib import Path

from ..train.logs import METRICS


def loss_plot(run_dir: Path) -> None:
    from ..report.plots import line_plot

    path = run_dir / METRICS
    if not path.exists():
        return
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if records:
        steps = [r["step"] for r in records]
        # smoothed once there are enough points for noise to hide the trend; the logged values stay, faint
        line_plot({"loss": (steps, [r["loss"] for r in records])}, run_dir / "loss.png", title="training loss",
                  xlabel="step", ylabel="loss", log_y=True, smooth=0.9 if len(records) > 20 else 0.0)


def write_report(run_dir: Path, summary: dict) -> None:
    lines = [f"# {summary['stage']} ({summary['kind']})", "", f"- hash: `{summary['hash']}`",
             f"- steps: {summary['steps']}", f"- wall time: {summary['seconds']} s"]
    for key, value in (summary.get("eval") or {}).items():
        lines.append(f"- {key}: {value}")
    lines += ["", "![loss](loss.png)", ""]
    samples = sorted((run_dir / "samples").glob("*.png"))
    if samples:
        lines += [f"![samples]({samples[-1].relative_to(run_dir)})", ""]
    for extra in ("eval_samples.png", "eval_scatter.png"):
        if (run_dir / extra).exists():
            lines += [f"![{extra}]({extra})", ""]
    if (run_dir / "distill_report.md").exists():  # a distillation stage's student-against-teacher table
        lines += ["", (run_dir / "distill_report.md").read_text().replace("# ", "## ", 1),
                  "![distill_report.png](distill_report.png)", ""]
    (run_dir / "report.md").write_text("\n".join(lines))
