"""What a run reports while it trains: metrics.jsonl, a progress bar (or plain lines), wandb."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

METRICS = "metrics.jsonl"


class MetricsLog:
    """Appends one JSON object per line; on resume, lines past the checkpoint's step are dropped
    so the file reads as if the run had never stopped."""

    def __init__(self, run_dir: Path, resume_step: int):
        self.path = run_dir / METRICS
        if self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


class Progress:
    """A rich progress bar on a terminal; periodic plain lines otherwise (logs of batch jobs)."""

    def __init__(self, label: str, total: int, start: int, every: int, stream=None, enabled: bool = True):
        self.label, self.total, self.every, self.enabled = label, total, every, enabled
        self.stream = stream or sys.stderr
        self.start_step, self.start_time = start, time.perf_counter()
        self.bar = None
        if enabled and self.stream.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeRemainingColumn

            self.bar = Bar(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                           TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=False)
            self.task = self.bar.add_task(label, total=total, completed=start, info="")
            self.bar.start()

    def rate(self, step: int) -> float:
        elapsed = time.perf_counter() - self.start_time
        return (step - self.start_step) / elapsed if elapsed > 0 else 0.0

    def update(self, step: int, metrics: dict) -> None:
        if not self.enabled:  # ranks other than 0 stay quiet
            return
        rate = self.rate(step)
        info = f"loss {metrics.get('loss', float('nan')):.4f}  {rate:.2f} it/s"
        if self.bar is not None:
            self.bar.update(self.task, completed=step, info=info)
        elif step % self.every == 0 or step == self.total:
            eta = (self.total - step) / rate if rate > 0 else float("nan")
            print(f"[{self.label}] step {step}/{self.total}  {info}  eta {eta:.0f}s", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


class WandbLog:
    def __init__(self, tracking, run_dir: Path, name: str, run_id: str, config: dict):
        import wandb

        self.wandb = wandb
        self.run = wandb.init(project=tracking.project, entity=tracking.entity, mode=tracking.mode, dir=str(run_dir),
                              name=name, id=run_id, resume="allow", tags=tracking.tags, config=config,
                              settings=wandb.Settings(silent=True))

    def log(self, record: dict, step: int) -> None:
        self.run.log({k: v for k, v in record.items() if k != "step"}, step=step)

    def image(self, key: str, path: Path, step: int) -> None:
        self.run.log({key: self.wandb.Image(str(path))}, step=step)

    def finish(self) -> None:
        self.run.finish()
