"""The `flowspec` command line. User errors print `file:line:col: key: message` and exit 2."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

USER_ERROR = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flowspec", description="Validate, plan and run flowspec specs.")
    sub = parser.add_subparsers(dest="command", required=True)

    def spec_args(p, many=False):
        p.add_argument("spec", nargs="+" if many else None, help="spec file(s)")
        p.add_argument("--profile", help="apply this named profile of the spec")
        p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                       help="override a key, e.g. --set stages.pretrain.steps=100 (repeatable)")

    def sweep_arg(p):
        p.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2",
                       help="run (or plan) one run per value, each applied like --set KEY=VALUE, the cross product "
                            "over several --sweep; each run is named <name>-<key><value>..., stages with the same "
                            "hash in several runs are trained once; manifest: <output_dir>/<name>-sweep/sweep.json "
                            "(repeatable)")

    p = sub.add_parser("validate", help="check specs (and every profile) without importing torch")
    spec_args(p, many=True)
    p.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2",
                   help="check every run of this sweep, as `run --sweep` would make them (repeatable)")
    p.add_argument("--format", choices=["text", "github", "json"], default="text",
                   help="text: file:line:col lines; github: GitHub Actions annotations; json: one document on stdout")
    p = sub.add_parser("plan", help="print the compiled plan with parameter counts and cost estimates")
    spec_args(p)
    sweep_arg(p)
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("--no-estimate", action="store_true", help="skip parameter counts and estimates (no torch)")
    p.add_argument("--dump-after", metavar="PASS", help="print the intermediate form after this compiler pass and stop")
    p.add_argument("--stage", action="append", metavar="NAME",
                   help="plan only this stage and the stages it reads (repeatable), as `run --stage` would run them")
    p = sub.add_parser("schema", help="print the JSON Schema of the spec language")
    p.add_argument("--out", help="write it to this file instead")
    p = sub.add_parser("reference", help="print the spec reference (every key: type, default, description) as "
                                         "Markdown")
    p.add_argument("--out", help="write it to this file instead (docs/spec-reference.md)")
    p = sub.add_parser("explain", help="print one key's documentation, e.g. stages.flow_grpo.kl_form")
    p.add_argument("key", help="a dotted key; after a union of kinds, a kind (stages.flow_grpo) or a member's key")
    p = sub.add_parser("run", help="run the plan's stages (finished stages are skipped, unfinished ones resume)")
    spec_args(p)
    sweep_arg(p)
    p.add_argument("--stage", action="append", metavar="NAME",
                   help="run only this stage and the stages it reads (repeatable)")
    p.add_argument("--fresh", action="store_true",
                   help="start new runs even where an unfinished run of a stage was made with a different spec")
    p.add_argument("--executor", choices=["local", "slurm"],
                   help="run here, or submit one SLURM job per stage (default: the spec's executor.kind)")
    p.add_argument("--nproc", type=int, metavar="N",
                   help="local: run each stage as N processes (torch.distributed; default executor.devices)")
    p.add_argument("--wait", action="store_true", help="slurm: follow the submitted jobs until they end")
    p.add_argument("--yes", "-y", action="store_true",
                   help="local: start stages estimated to run here for over an hour without asking")
    p = sub.add_parser("status", help="each stage of a run: its SLURM job, state, step and last loss; of a sweep "
                                      "(runs/NAME-sweep), each run's")
    p.add_argument("run", help="a run folder (runs/NAME), a sweep's folder (runs/NAME-sweep) or the spec that made it")
    p.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2",
                   help="with a spec: the spec's sweep (its last one, which must have swept these)")
    p.add_argument("--wait", action="store_true", help="follow the run's SLURM jobs until they end (exit 1 if one failed)")
    p = sub.add_parser("cancel", help="cancel the SLURM jobs of a run, or of every run of a sweep, that have not ended")
    p.add_argument("run", help="a run folder (runs/NAME), a sweep's folder (runs/NAME-sweep) or the spec that made it")
    p = sub.add_parser("report", help="write one static HTML page of a run (every stage) or a sweep's comparison")
    p.add_argument("run", help="a run folder (runs/NAME), the spec that made it, or a sweep folder (sweep.json)")
    p.add_argument("--out", help="write the page here (default: RUN/report.html)")
    p = sub.add_parser("sample", help="generate a sample grid (PNG) or 2-D samples (.npy) from a finished stage "
                                      "or a diffusers folder")
    p.add_argument("path", help="a stage folder (runs/NAME/STAGE-HASH), a run folder (runs/NAME: its last stage), "
                                "or a diffusers folder with --spec")
    p.add_argument("--spec", help="for a diffusers folder: the spec whose model section describes it")
    p.add_argument("--stage", help="with --spec: the stage whose sampler settings to use (default: the last)")
    p.add_argument("--prompt", action="append", default=[], help="prompt (repeatable; default: the stage's own)")
    p.add_argument("--n", type=int, default=4, help="images per prompt (points for 2-D data)")
    p.add_argument("--steps", type=int, help="sampler steps (default: the stage's; a distilled student's own, on its grid)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cfg-scale", type=float, help="guidance scale (default: the stage's)")
    p.add_argument("--solver", choices=["euler", "heun", "consistency"],
                   help="ODE solver (default: the stage's); consistency: multi-step sampling of a consistency-"
                        "distilled student")
    p.add_argument("--no-enhance", action="store_true",
                   help="give the model the prompts as written, not rewritten by the stage's prompt_enhancer")
    p.add_argument("--lora", action="append", default=[], metavar="PATH[:SCALE]",
                   help="merge a LoRA stage's adapter, scaled (default 1), into the weights first (repeatable)")
    p.add_argument("--out", required=True, help="output file: .png (grid) or .npy")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from .compiler import SpecError

    try:
        return COMMANDS[args.command](args)
    except SpecError as exc:
        if getattr(exc, "one_line", None):  # about this machine, not the spec (e.g. SLURM is not installed)
            print(exc.one_line, file=sys.stderr)
            return USER_ERROR
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        errors = sum(i.severity == "error" for i in exc.issues)
        print(f"flowspec {args.command}: {errors} error{'s' if errors != 1 else ''}", file=sys.stderr)
        return USER_ERROR


def cmd_validate(args) -> int:
    from .compiler import SpecError, compile_spec
    from .compiler.errors import annotation, issue_json
    from .compiler.sweep import expand
    from .compiler.yamlpos import load_file

    results = []
    for path in args.spec:
        profiles = [args.profile] if args.profile else [None, *(load_file(path).get("profiles") or {})]
        for profile in profiles:
            try:
                plans = ([m.plan for m in expand(path, profile, args.sets, args.sweep).members] if args.sweep
                         else [compile_spec(path, profile, args.sets)])
                issues = list(dict.fromkeys(w for plan in plans for w in plan.warnings))
                stages = [s.name for s in plans[0].stages]
            except SpecError as exc:
                plans, issues, stages = [], list(exc.issues), None
            results.append({"spec": path, "profile": profile, "ok": stages is not None, "stages": stages,
                            "issues": issues, **({"runs": [p.spec.name for p in plans]} if args.sweep else {})})
    failed = sum(not r["ok"] for r in results)
    if args.format == "json":
        print(json.dumps({"ok": not failed, "results": [{**r, "issues": [issue_json(i) for i in r["issues"]]}
                                                        for r in results]}, indent=2))
        return USER_ERROR if failed else 0
    for r in results:
        label = r["spec"] + (f" --profile {r['profile']}" if r["profile"] else "")
        for issue in r["issues"]:
            print(annotation(issue) if args.format == "github" else issue, file=sys.stdout if args.format == "github"
                  else sys.stderr)
        if r["ok"]:
            count = len(r["stages"])
            runs = f"{len(r['runs'])} sweep runs, " if "runs" in r else ""
            print(f"ok   {label} ({runs}{count} stage{'s' if count != 1 else ''}: {', '.join(r['stages'])})")
        else:
            print(f"FAIL {label}", file=sys.stderr)
    return USER_ERROR if failed else 0


def cmd_plan(args) -> int:
    from .compiler import PASS_NAMES, compile_spec

    if args.dump_after and args.dump_after not in PASS_NAMES:
        print(f"--dump-after: unknown pass '{args.dump_after}' (passes: {', '.join(PASS_NAMES)})", file=sys.stderr)
        return USER_ERROR
    resolver = None
    if not args.no_estimate:  # --no-estimate: no torch, so the ops are not looked up in the runtime either
        from .runtime.ops import resolve as resolver
    if args.dump_after:
        compile_spec(args.spec, args.profile, args.sets, on_pass=_dumper(args.dump_after), stages=args.stage,
                     resolver=resolver)
        return 0
    if args.sweep:
        return _plan_sweep(args, resolver)
    plan = compile_spec(args.spec, args.profile, args.sets, stages=args.stage, resolver=resolver)
    if not args.no_estimate:
        from .runtime.estimate import estimate_plan

        plan = estimate_plan(plan)
    print(json.dumps(plan.to_json(), indent=2) if args.json else plan.as_text())
    return 0


def _plan_sweep(args, resolver) -> int:
    from .compiler.sweep import expand, manifest, render

    sweep = expand(args.spec, args.profile, args.sets, args.sweep, stages=args.stage, resolver=resolver)
    plans = [member.plan for member in sweep.members]
    if not args.no_estimate:
        from .runtime.estimate import estimate_plan

        plans = [estimate_plan(plan) for plan in plans]
    if args.json:
        print(json.dumps({"sweep": manifest(sweep), "plans": [plan.to_json() for plan in plans]}, indent=2))
    else:
        print(render(sweep, plans))
    return 0


def _dumper(target: str):
    def on_pass(name, state):
        if name != target:
            return
        from .compiler.yamlpos import to_plain

        if state.plan is not None:
            form = state.plan.to_json()
        elif state.spec is not None:
            form = {"spec": state.spec.model_dump(mode="json", by_alias=True),
                    "warnings": [str(w) for w in state.warnings]}
        else:
            form = to_plain(state.tree)
        print(json.dumps(form, indent=2, default=str))
        raise SystemExit(0)

    return on_pass


def _write_out(text: str, out: str | None) -> int:
    """A generated file (`--out`), or standard output."""
    if out:
        with open(out, "w", encoding="utf-8") as handle:
            handle.write(text)
    else:
        sys.stdout.write(text)
    return 0


def cmd_schema(args) -> int:
    from .schemas.export import schema_text

    return _write_out(schema_text(), args.out)


def cmd_reference(args) -> int:
    from .compiler.reference import markdown
    from .schemas.export import json_schema

    return _write_out(markdown(json_schema()), args.out)


def cmd_explain(args) -> int:
    from .compiler.reference import UnknownKey, explain
    from .schemas.export import json_schema

    try:
        print(explain(json_schema(), args.key))
    except UnknownKey as exc:
        print(f"flowspec explain: {exc}", file=sys.stderr)
        return USER_ERROR
    return 0


def cmd_run(args) -> int:
    from .compiler import compile_spec

    from .runtime.ops import resolve

    from .compiler import SpecError
    from .runtime.executors import machine_issues, run_plan

    if args.sweep:
        from .runtime.executors.sweep import run_sweep_command

        return run_sweep_command(args)
    # An op without a runtime is refused here, at its line, before any model is built; so is SLURM that
    # cannot be reached, in the same report, so that one try shows everything in the way.
    try:
        plan = compile_spec(args.spec, args.profile, args.sets, stages=args.stage, resolver=resolve, runnable=True,
                            executor=args.executor)
    except SpecError as exc:
        from .compiler.validate import position

        found = [*exc.issues, *machine_issues(args.spec, args.profile, args.sets, args.stage, args.executor)]
        raise SpecError(sorted(found, key=position)) from None

    if args.nproc is not None and args.nproc < 1:
        print("flowspec run: --nproc must be at least 1", file=sys.stderr)
        return USER_ERROR
    return run_plan(plan, fresh=args.fresh, executor=args.executor, nproc=args.nproc, wait=args.wait, yes=args.yes)


def _run_folder(target: str):
    """A run folder, or the run folder a spec writes to."""
    from pathlib import Path

    path = Path(target)
    if path.is_file():
        from .compiler import compile_spec

        plan = compile_spec(target, None, [])
        return Path(plan.spec.output_dir) / plan.spec.name
    return path


def cmd_status(args) -> int:
    from .runtime.executors.follow import status
    from .runtime.executors.sweep import is_sweep, sweep_folder, sweep_status

    folder = sweep_folder(args.run, args.sweep) if args.sweep else _run_folder(args.run)
    if is_sweep(folder):
        return sweep_status(folder, follow=args.wait)
    return status(folder, follow=args.wait)


def cmd_cancel(args) -> int:
    from .runtime.executors.follow import cancel
    from .runtime.executors.sweep import is_sweep, sweep_cancel

    folder = _run_folder(args.run)
    return sweep_cancel(folder) if is_sweep(folder) else cancel(folder)


def cmd_report(args) -> int:
    from pathlib import Path

    from .runtime.report.collect import NotARun
    from .runtime.report.html import write_report

    try:
        path = write_report(_run_folder(args.run), Path(args.out) if args.out else None)
    except NotARun as exc:
        print(f"flowspec report: {exc}", file=sys.stderr)
        return USER_ERROR
    print(path)
    return 0


def cmd_sample(args) -> int:
    from .runtime.sample_cli import sample_command

    return sample_command(args)


COMMANDS = {"validate": cmd_validate, "plan": cmd_plan, "schema": cmd_schema, "reference": cmd_reference,
            "explain": cmd_explain, "run": cmd_run, "sample": cmd_sample,
            "status": cmd_status, "cancel": cmd_cancel, "report": cmd_report}


if __name__ == "__main__":
    sys.exit(main())
