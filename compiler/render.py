"""The text table `flowspec plan` prints."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .plan import Plan

COLUMNS = ("stage", "kind", "from", "steps", "params", "trainable", "train FLOPs", "mem/dev", "GPU-h", "cache")


def si(value: float, unit: str = "") -> str:
    for threshold, suffix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= threshold:
            return f"{value / threshold:.3g}{suffix}{unit}"
    return f"{value:.3g}{unit}"


def count(value: int) -> str:
    for threshold, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if value >= threshold:
            return f"{value / threshold:.3g}{suffix} ({value:,})"
    return f"{value:,}"


def render_plan(plan: "Plan") -> str:
    rows = []
    for s in plan.stages:
        e = s.estimate
        rows.append((s.name, s.kind, s.from_ or "-", f"{s.steps:,}",
                     count(e.params_total) if e else "-", count(e.params_trainable) if e else "-",
                     f"{e.train_flops:.3g}" if e else "-", f"{e.memory_gib:.1f} GiB" if e else "-",
                     f"{e.gpu_hours:,.2f}" if e else "-", s.cache))
    widths = [max(len(c), *(len(r[k]) for r in rows)) for k, c in enumerate(COLUMNS)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    title = f"plan {plan.name}" + (f" (profile {plan.profile})" if plan.profile else "") + f"  [{plan.source}]"
    out = [title, line(COLUMNS), line(["-" * w for w in widths])] + [line(r) for r in rows]
    estimates = [s.estimate for s in plan.stages if s.estimate]
    if estimates:
        total = sum(e.gpu_hours for e in estimates)
        hw = {f"{e.devices} x {e.accelerator}" for e in estimates}
        out.append(f"total: {total:,.2f} GPU-hours on {', '.join(sorted(hw))}")
    for s in plan.stages:
        out.append(f"{s.name}: {s.run_dir}  hash {s.hash[:12]}  seed {s.seed}")
        out += _op_lines(s, plan.resolved)
        for note in (s.estimate.notes if s.estimate else ()):
            out.append(f"    note: {note}")
        for phase in s.data_report:
            out += _phase_lines(phase)
    out.append("hashes cover the model and each stage's settings that change its weights; executor (devices, nodes, "
               "SLURM) and train.sharding are left out: any number of processes, sharded or not, draws the same noise, timesteps and data as one, so the "
               "weights differ only by float reassociation (measured up to 1.3e-4) and a stage may resume on "
               "another number of devices")
    blocked = {s.name: sorted({op.op for op in s.ops if op.missing}) for s in plan.stages}
    blocked = {name: ops for name, ops in blocked.items() if ops}
    if blocked:
        out.append("`flowspec run` refuses stages whose ops have no runtime yet: " +
                   "; ".join(f"{name} ({', '.join(ops)})" for name, ops in blocked.items()))
    out += [str(w) for w in plan.warnings]
    return "\n".join(out)


def _op_lines(stage, resolved: bool) -> list[str]:
    """The ops `run` performs, in order, each with its parameters and the spec line it comes from."""
    cells = [(f"{k}. {op.op}", " ".join(f"{key}={value}" for key, value in op.params.items()), op.loc)
             for k, op in enumerate(stage.ops, 1)]
    name_w, param_w = (max(len(c[i]) for c in cells) for i in (0, 1))
    lines = []
    for (name, params, loc), op in zip(cells, stage.ops):
        status = "  [no runtime yet]" if op.missing else ""
        lines.append(f"    {name.ljust(name_w)}  {params.ljust(param_w)}  {loc}{status}")
    if not resolved:
        lines.append("    (ops not checked against the runtime: --no-estimate)")
    return lines


def _phase_lines(phase: dict) -> list[str]:
    lines = []
    for part in phase["components"]:
        skipped = f", {part['skipped']} bad file(s) skipped" if part.get("skipped") else ""
        lines.append(f"    phase {phase['phase']} ({part['name']}, {part['kept']} of {part['found']} images): "
                     f"{part['batches_per_epoch']} batches/epoch, {part['repeated']} repeated, {part['dropped']} dropped"
                     f"{skipped}")
        lines += [f"        skipped {f['file']}: {f['reason']}" for f in part.get("skipped_files", [])[:5]]
        if part.get("by_filter"):
            lines.append(f"        filters: {filter_counts(part)}")
        cells = [f"{b['bucket']}: {b['images']} img / {b['batches']} batches" +
                 (f" +{b['repeated']} rep" if b["repeated"] else "") + (f" -{b['dropped']} drop" if b["dropped"] else "")
                 for b in part["per_bucket"]]
        lines.append("        " + "; ".join(cells))
    return lines


def filter_counts(part: dict) -> str:
    """"caption contains 'red' (any case): 30 of 256 kept; then score >= 5: 12" (each after the ones before)."""
    steps = [f"{f['filter']}: {f['kept']}" for f in part["by_filter"]]
    return f"{steps[0]} of {part['found']} kept" + "".join(f"; then {step}" for step in steps[1:])
