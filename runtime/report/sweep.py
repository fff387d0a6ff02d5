"""The comparison page of a sweep: `flowspec report <output_dir>/<name>-sweep/`.

The folder's sweep.json (written by `flowspec run SPEC --sweep key=a,b`) lists the runs:
{"spec": path, "axes": {key: [values]}, "runs": [{"name", "folder", "overrides": {key: value}}]}, each
folder relative to the manifest's folder or absolute. The page has one row per run (its overrides, each
stage's final loss and evaluation numbers, its wall time, a link to its own report, written too) and
the loss curves of each stage overlaid, one curve per run.
"""
from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path

from .collect import SWEEP_MANIFEST, NotARun, Stage, flat, latest_stages, read_stage
from .page import Raw, figure, figures, link, page, plot_uri, relative, table

REPORT = "report.html"


@dataclass
class SweepRun:
    name: str
    folder: Path
    overrides: dict
    stages: list[Stage] = field(default_factory=list)
    report: Path | None = None


def read_manifest(folder: Path) -> tuple[dict, list[SweepRun]]:
    path = folder / SWEEP_MANIFEST
    try:
        manifest = json.loads(path.read_text())
        runs = [SweepRun(str(r["name"]), folder / Path(r["folder"]), dict(r.get("overrides") or {}))
                for r in manifest["runs"]]  # an absolute folder stays itself under `/`
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise NotARun(f"{path} is not a sweep manifest ({type(exc).__name__}: {exc}); it holds "
                      '{"spec": ..., "axes": {key: [values]}, "runs": [{"name", "folder", "overrides"}]}') from None
    return manifest, runs


def write_sweep_report(folder: Path, out: Path | None = None) -> Path:
    """Each run's own report, then the comparison page; returns the page's path."""
    from .html import write_run_report

    folder = Path(folder)
    out = Path(out) if out is not None else folder / REPORT
    manifest, runs = read_manifest(folder)
    for run in runs:
        latest = latest_stages(run.folder)[0] if run.folder.is_dir() else []
        run.stages = [read_stage(f) for f in latest]
        if run.stages:
            run.report = write_run_report(run.folder)
    axes = list(manifest.get("axes") or {}) or list(dict.fromkeys(k for r in runs for k in r.overrides))
    stage_names = list(dict.fromkeys(s.name for r in runs for s in r.stages))
    body = [f"<h1>Sweep {html.escape(folder.name)}</h1>",
            f"<p>Spec <code>{html.escape(str(manifest.get('spec', '?')))}</code>; {len(runs)} run(s) over "
            + (", ".join(f"<code>{html.escape(k)}</code> in {html.escape(', '.join(map(str, v)))}"
                         for k, v in (manifest.get("axes") or {}).items()) or "no axes") + ".</p>",
            _runs_table(runs, axes, stage_names, out.parent), _curves(runs, stage_names)]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page(f"flowspec sweep: {folder.name}", body), encoding="utf-8")
    tmp.replace(out)
    return out


def _numbers(stage: Stage) -> dict[str, float]:
    """A stage's numbers worth comparing across runs: its final loss and its scalar evaluation results."""
    out = {"final loss": stage.final_loss}
    out.update({k: v for k, v in flat(stage.eval).items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return out


def _runs_table(runs: list[SweepRun], axes: list[str], stage_names: list[str], here: Path) -> Raw:
    columns: list[tuple[str, str]] = []  # (stage, number) in first-seen order
    for name in stage_names:
        for run in runs:
            for stage in run.stages:
                if stage.name == name:
                    columns += [(name, key) for key in _numbers(stage) if (name, key) not in columns]
    rows = []
    for run in runs:
        found = {s.name: _numbers(s) for s in run.stages}
        label = link(relative(run.report, here), run.name) if run.report else Raw(
            f'{html.escape(run.name)} <span class="warn">(no stages in {html.escape(str(run.folder))})</span>')
        seconds = sum(s.seconds or 0 for s in run.stages)
        state = "done" if run.stages and all(s.done for s in run.stages) else "unfinished" if run.stages else "missing"
        rows.append([label, *[run.overrides.get(k) for k in axes],
                     *[found.get(stage, {}).get(key) for stage, key in columns], state, round(seconds, 1)])
    headers = ["run", *axes, *[f"{stage}: {key}" for stage, key in columns], "state", "wall time (s)"]
    return Raw("<h2>Runs</h2>" + table(headers, rows))


def _curves(runs: list[SweepRun], stage_names: list[str]) -> Raw:
    items = []
    for name in stage_names:
        series = {}
        for run in runs:
            for stage in run.stages:
                if stage.name == name:
                    logged = [r for r in stage.metrics if "loss" in r and "step" in r]
                    series[run.name] = ([r["step"] for r in logged], [r["loss"] for r in logged])
        longest = max((len(xs) for xs, _ in series.values()), default=0)
        uri = plot_uri(series, title=f"{name}: training loss", xlabel="step", ylabel="loss", log_y=True,
                       smooth=0.9 if longest > 20 else 0.0)
        if uri:
            items.append(figure(uri, f"{name}: loss of each run"))
    return Raw("<h2>Loss curves</h2>" + (figures(items) if items else '<p class="note">No metrics logged yet.</p>'))
