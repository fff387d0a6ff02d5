"""`flowspec report RUN`: one static HTML page for a whole run (every stage of its latest run).

The page holds the plan table, timings, loss and metric curves, the sample grids written during training,
evaluation and distillation tables and the resolved spec of each stage, all read from the run folder;
images are inlined, so the page needs no server and no network. A sweep folder (sweep.json) gets a
comparison page instead (runtime/report/sweep.py).
"""
from __future__ import annotations

import html
import json
import re
import sys
import time
from pathlib import Path

from .collect import (SWEEP_MANIFEST, NotARun, Stage, check_run, flat, latest_stages, parameter_counts,
                      read_stage)
from .page import (Raw, data_uri, details, figure, figures, fmt, link, markdown, page, plot_uri, pre, relative,
                   table)

REPORT = "report.html"
# Logged every step by every kind but said better elsewhere: the step is the x axis, speed is in the
# timings, the curriculum phase and resolution and the LR schedule follow from the spec.
NOT_PLOTTED = {"step", "it_per_s", "phase", "resolution", "lr"}
# Shown by the report's own tables or sections rather than as results.
RESULT_KEYS_SHOWN = {"stage", "kind", "hash", "steps", "seconds", "eval", "distill_report"}
STAGE_IMAGES = ("eval_samples.png", "eval_scatter.png", "distill_report.png")


def write_report(target: Path, out: Path | None = None, folders: list[Path] | None = None) -> Path:
    """The report of a run folder (or the comparison page of a sweep folder); returns the page's path.
    `folders`: the stage folders of the run (the executor knows them); by default the latest run's."""
    target = Path(target)
    check_run(target)
    if (target / SWEEP_MANIFEST).exists():
        from .sweep import write_sweep_report

        return write_sweep_report(target, out)
    return write_run_report(target, out, folders)


def write_run_report(run_dir: Path, out: Path | None = None, folders: list[Path] | None = None) -> Path:
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / REPORT
    latest, others = latest_stages(run_dir)
    if folders is not None:  # the executor's own list, in plan order: exact where the folder's dates are not
        found = latest + others
        latest = [Path(f) for f in folders if (Path(f) / "spec.json").exists()]
        chosen = {f.resolve() for f in latest}
        others = sorted((f for f in found if f.resolve() not in chosen), key=lambda p: p.name)
    if not latest:
        raise NotARun(f"{run_dir} holds no stage folders of this run yet")
    stages = [read_stage(f) for f in latest]
    body = [*_header(run_dir, stages, others, out.parent), _plan_table(stages, out.parent), _timings(stages),
            _overview(stages), *[_stage_section(s, out.parent) for s in stages], _spec_section(stages)]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")  # a reader never sees half a page
    tmp.write_text(page(f"flowspec report: {run_dir.name}", body), encoding="utf-8")
    tmp.replace(out)
    return out


def _header(run_dir: Path, stages: list[Stage], others: list[Path], here: Path) -> list[str]:
    total = sum(s.seconds or 0 for s in stages)
    done = sum(s.done for s in stages)
    lines = [f"<h1>Run {html.escape(run_dir.name)}</h1>",
             f"<p>Folder <code>{html.escape(str(run_dir.resolve()))}</code>; report written "
             f"{time.strftime('%Y-%m-%d %H:%M:%S')}. {len(stages)} stage(s), {done} finished, "
             f"{fmt(round(total, 1))} s of training in all.</p>",
             "<p>Stages of the latest run: " + ", ".join(link(relative(s.folder, here), s.folder.name)
                                                         for s in stages) + ".</p>"]
    if others:
        names = ", ".join(f"<code>{html.escape(p.name)}</code>" for p in others)
        lines.append(f'<p class="note">Not covered (stage folders of other spec versions or earlier runs): '
                     f"{names}.</p>")
    return lines


def _plan_table(stages: list[Stage], here: Path) -> Raw:
    names = {s.hash: s.name for s in stages}
    rows = []
    for s in stages:
        stage = (s.resolved or {}).get("stage") or s.identity.get("stage", {})
        train, optimizer = stage.get("train") or {}, stage.get("optimizer") or {}
        reads = ", ".join(f"{k}: {names[v]} ({v[:12]})" if v in names else f"{k}: {v}"  # a path, or another run's
                          for k, v in s.upstream.items()) or "-"
        params = ", ".join(f"{part} {n:,}" for part, n in parameter_counts(s.folder).items()) or "-"
        progress = s.steps if s.done else f"{s.last_step or 0} / {s.steps}"
        rows.append([Raw(f'<a href="#{html.escape(s.name)}">{html.escape(s.name)}</a>'), s.kind, progress,
                     "done" if s.done else "unfinished", train.get("global_batch"), optimizer.get("lr"), reads,
                     params, s.final_loss, link(relative(s.folder, here), s.folder.name)])
    return Raw("<h2>Plan</h2>" + table(["stage", "kind", "steps", "state", "batch", "lr", "reads (hash)",
                                        "parameters (exported)", "final loss", "folder"], rows) + _estimates(stages))


def _estimates(stages: list[Stage]) -> str:
    """What `flowspec plan` estimated for each stage on the hardware its spec declares (estimate.json)."""
    rows = []
    for s in stages:
        e = s.estimate
        if not e:
            rows.append([s.name, "-", None, None, None, None, None, None])
            continue
        rows.append([s.name, f"{e['devices']} x {e['accelerator']}", e["params_total"], e["params_trainable"],
                     f"{e['train_flops']:.3g}", round(e["memory_gib"], 3), f"{e['gpu_hours']:.3g}",
                     f"{e['step_seconds']:.3g}"])
    return ("<h3>Estimates</h3><p class=\"note\">The plan's, on each stage's declared hardware, written when the "
            "stage started (estimate.json); '-' for a stage run without them.</p>" +
            table(["stage", "declared hardware", "parameters", "trainable", "training FLOPs",
                   "peak memory per device (GiB)", "device-hours", "seconds per step"], rows))


def _timings(stages: list[Stage]) -> Raw:
    longest = max((s.seconds or 0 for s in stages), default=0) or 1
    rows = []
    for s in stages:
        speeds = [r["it_per_s"] for r in s.metrics if isinstance(r.get("it_per_s"), (int, float))]
        bar = Raw(f'<span class="bar" style="width:{int(200 * (s.seconds or 0) / longest)}px"></span>')
        rows.append([s.name, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s.started)),
                     s.seconds if s.seconds is not None else "unfinished", bar,
                     speeds[-1] if speeds else None])
    total = sum(s.seconds or 0 for s in stages)
    rows.append([Raw("<b>total</b>"), "", round(total, 1), "", None])
    return Raw("<h2>Timings</h2>" + table(["stage", "started", "wall time (s)", "", "it/s (last logged)"], rows))


def _overview(stages: list[Stage]) -> Raw:
    if len(stages) < 2:  # the stage's own section has the same curve
        return Raw("")
    series = {s.name: ([r["step"] for r in s.metrics if "loss" in r], [r["loss"] for r in s.metrics if "loss" in r])
              for s in stages}
    uri = plot_uri(series, title="training loss of each stage", xlabel="step of the stage", ylabel="loss",
                   log_y=True)
    return Raw("<h2>Loss</h2>" + (figure(uri, "training loss, every stage") if uri else
                                  '<p class="note">No metrics logged yet.</p>'))


def _stage_section(stage: Stage, here: Path) -> Raw:
    title = f"{stage.name} ({stage.kind})"
    parts = [f'<h2 id="{html.escape(stage.name)}">{html.escape(title)}</h2>',
             f"<p>Folder {link(relative(stage.folder, here), stage.folder.name)}, hash "
             f"<code>{html.escape(stage.hash[:12])}</code>" + ("" if stage.done else
                                                                ' <span class="warn">(unfinished)</span>') + ".</p>",
             _curves(stage), _samples(stage), _evaluation(stage), _results(stage)]
    if stage.distill_md:
        parts.append("<h3>Distillation</h3>" + markdown(stage.distill_md))
    images = [figure(data_uri(stage.folder / name), name) for name in STAGE_IMAGES if (stage.folder / name).exists()]
    if images:
        parts.append("<h3>Evaluation images</h3>" + figures(images))
    return Raw("\n".join(parts))


def _curves(stage: Stage) -> Raw:
    """The loss (with any *_loss terms logged beside it) smoothed on a log scale, then each other logged
    number that changes, one figure each."""
    keys = [k for r in stage.metrics for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    keys = [k for k in dict.fromkeys(keys) if k not in NOT_PLOTTED]
    points = {k: ([r["step"] for r in stage.metrics if k in r], [r[k] for r in stage.metrics if k in r]) for k in keys}
    losses = [k for k in keys if k == "loss" or k.endswith("_loss")]
    smooth = 0.9 if len(stage.metrics) > 20 else 0.0
    items = []
    if losses == ["loss"] and stage.done and (stage.folder / "loss.png").exists():  # the stage drew it (summary.py)
        items.append(figure(data_uri(stage.folder / "loss.png"), "loss"))
    elif losses:
        uri = plot_uri({k: points[k] for k in losses}, title=f"{stage.name}: training loss", xlabel="step",
                       ylabel="loss", log_y=True, smooth=smooth)
        items.append(figure(uri, "loss") if uri else "")
    for key in keys:
        if key not in losses and len(set(points[key][1])) > 1:
            uri = plot_uri({key: points[key]}, title=f"{stage.name}: {key}", xlabel="step", ylabel=key,
                           smooth=smooth)
            items.append(figure(uri, key) if uri else "")
    return Raw("<h3>Curves</h3>" + figures(items)) if items else Raw('<p class="note">No metrics logged.</p>')


def _samples(stage: Stage) -> Raw:
    """The grids the stage sampled during training (samples/step-*.png), in step order, and any other grid
    it wrote there (e.g. a DreamBooth subject's)."""
    shots = stage.samples + sorted(p for p in (stage.folder / "samples").glob("*.png") if p not in stage.samples)
    if not shots:
        return Raw("")
    items = [figure(data_uri(p), re.sub(r"step-0*(\d)", r"step \1", p.stem)) for p in shots]
    return Raw("<h3>Samples over training</h3>" + figures(items))


def _evaluation(stage: Stage) -> Raw:
    if not stage.eval:
        return Raw("")
    rows = [[key, json.dumps(value) if isinstance(value, list) else value] for key, value in flat(stage.eval).items()]
    return Raw("<h3>Evaluation</h3>" + table(["metric", "value"], rows))


def _results(stage: Stage) -> Raw:
    extra = {k: v for k, v in stage.results.items() if k not in RESULT_KEYS_SHOWN}
    if not extra:
        return Raw("")
    rows = [[key, json.dumps(value) if isinstance(value, list) else value] for key, value in flat(extra).items()]
    return Raw("<h3>Results</h3>" + table(["result", "value"], rows))


def _spec_section(stages: list[Stage]) -> Raw:
    parts = ["<h2>Resolved spec</h2>", '<p class="note">Each stage\'s full resolved spec (resolved.json: model and '
             "stage with every default filled in) and its identity (spec.json: what its hash covers).</p>"]
    for s in stages:
        if s.resolved is not None:
            parts.append(details(f"{s.name}: resolved.json", pre(json.dumps(s.resolved, indent=2))))
        parts.append(details(f"{s.name}: spec.json", pre(json.dumps(s.identity, indent=2, sort_keys=True))))
    return Raw("\n".join(parts))


def report_after_run(run_dir: Path, folders: list[Path]) -> None:
    """Called by the executors once the stages have ended: writes the report and prints its path as the
    run's last line. A report that cannot be written is said, and does not change the run's exit code."""
    _announce(lambda: write_run_report(Path(run_dir), folders=folders))


def report_after_sweep(folder: Path) -> None:
    """The comparison page of a sweep (and each run's report), its path the sweep's last line."""
    from .sweep import write_sweep_report

    _announce(lambda: write_sweep_report(Path(folder)))


def _announce(write) -> None:
    try:
        path = write()
    except Exception as exc:  # the stages' work is done and kept whatever went wrong with the page about it
        print(f"report not written: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return
    print(f"report: {path}", flush=True)

