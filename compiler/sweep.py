"""`--sweep KEY=V1,V2,...`: the cross product of a spec's variants, each a run of its own.

A member is the spec with one value of every axis applied like `--set KEY=VALUE` (after the profile and
the --set overrides) and a `name` of its own, so each member writes its own run folder. Every member is
compiled before anything runs: a key or value that fails in any member stops the sweep, naming the member.

A stage whose hash is the same in several members (the spec name is not part of a hash) is trained once:
one folder owns it and the other members' folders of that stage are links to it (made when the sweep runs,
runtime/executors/sweep.py), so each member's run folder stays complete for `status`, `report`, `sample`.
"""
from __future__ import annotations

import dataclasses
import itertools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..schemas.base import NAME_MAX
from .errors import Issue, Location, SpecError
from .lower import DONE_MARKER, cache_status
from .overrides import parse_set
from .plan import Plan

MANIFEST = "sweep.json"
SWEEP_SUFFIX = "-sweep"  # <output_dir>/<name>-sweep/ holds the manifest (and, on SLURM, the arrays' logs)


@dataclass(frozen=True)
class Axis:
    key: str
    values: tuple[str, ...]  # each as written: "1e-4" stays "1e-4" in names and in the manifest

    @property
    def arg(self) -> str:
        return f"{self.key}={','.join(self.values)}"

    @property
    def loc(self) -> Location:
        return Location(f"--sweep {self.arg}")


@dataclass(frozen=True)
class Member:
    name: str
    overrides: dict[str, str]  # axis key -> value as written
    plan: Plan


@dataclass(frozen=True)
class Sweep:
    spec: str
    name: str  # the spec's own name; members are <name>-<label><value>...
    folder: Path  # where the manifest goes
    axes: tuple[Axis, ...]
    members: tuple[Member, ...]
    links: dict[str, str]  # a member's stage folder -> the folder that owns that stage (same hash)

    def owner_of(self, run_dir: str) -> str:
        return self.links.get(run_dir, run_dir)


def split_values(text: str) -> list[str]:
    """Comma-separated YAML values; commas inside brackets, braces or quotes belong to their value."""
    values, depth, quote, start = [], 0, "", 0
    for i, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            values.append(text[start:i].strip())
            start = i + 1
    return values + [text[start:].strip()]


def parse_axes(args: Sequence[str], sets: Sequence[str] = ()) -> tuple[Axis, ...]:
    """The --sweep arguments as axes; every malformed one is reported together."""
    issues, axes = [], []
    set_keys = {text.partition("=")[0].strip() for text in sets}
    for arg in args:
        where = Location(f"--sweep {arg}")
        key, sep, text = (part.strip() for part in arg.partition("="))
        values = split_values(text) if text else []
        problem = _axis_problem(key, sep, values, set_keys, [a.key for a in axes])
        if problem:
            issues.append(Issue(where, key, problem))
            continue
        for value in values:
            try:
                parse_set(f"{key}={value}", "--sweep")
            except SpecError as exc:
                issues.extend(exc.issues)
        axes.append(Axis(key, tuple(values)))
    if issues:
        raise SpecError(issues)
    return tuple(axes)


def _axis_problem(key: str, sep: str, values: list[str], set_keys: set[str], earlier: list[str]) -> str | None:
    if not sep or not key:
        return "expected --sweep dotted.key=value1,value2,..."
    if not values:
        return "the list of values is empty: give one or more, separated by commas"
    if "" in values:
        return f"value {values.index('') + 1} of {len(values)} is empty (a stray comma?)"
    if key == "name":
        return "each member's name is made from its values: sweep other keys (set the base name with --set name=...)"
    for other in earlier:
        if other == key:
            return "this key is swept twice: give all its values in one --sweep, separated by commas"
        if key.startswith(other + ".") or other.startswith(key + "."):
            return f"overlaps --sweep {other}: a member would set one inside the other"
    if key in set_keys:
        return "this key is also given with --set, which the sweep would override: drop one"
    return None


def member_names(base: str, axes: Sequence[Axis]) -> list[tuple[str, dict[str, str]]]:
    """(name, overrides) of every member, first axis outermost: `<base>-<label><value>-...`, where a label is
    the shortest tail of the key that tells the axes apart (`lr`, `global_batch`)."""
    labels = _labels([axis.key for axis in axes])
    tokens = [_tokens(axis) for axis in axes]
    members = []
    for combo in itertools.product(*(range(len(axis.values)) for axis in axes)):
        name = "-".join([base, *(labels[a] + tokens[a][i] for a, i in enumerate(combo))])
        members.append((name, {axes[a].key: axes[a].values[i] for a, i in enumerate(combo)}))
    names = [name for name, _ in members]
    if len(set(names)) < len(names) or max(map(len, names)) > NAME_MAX:  # too long or ambiguous: numbered
        width = len(str(len(members)))
        members = [(f"{base[:NAME_MAX - width - 1]}-{i + 1:0{width}d}", overrides)
                   for i, (_, overrides) in enumerate(members)]
    return members


def _labels(keys: list[str]) -> list[str]:
    parts = [key.split(".") for key in keys]
    tail = lambda p, n: ".".join(p[-n:])
    labels = []
    for mine in parts:
        n = 1
        while n < len(mine) and any(tail(other, n) == tail(mine, n) for other in parts if other is not mine):
            n += 1
        labels.append(tail(mine, n))
    return labels


def _tokens(axis: Axis) -> list[str]:
    """Each value as a piece of a folder name; an axis whose values do not stay distinct that way is numbered."""
    tokens = [re.sub(r"[^A-Za-z0-9._-]+", "_", value).strip("_") for value in axis.values]
    if "" in tokens or len(set(tokens)) < len(tokens):
        tokens = [f"v{i + 1}" for i in range(len(tokens))]
    return tokens


def expand(path: str, profile: str | None, sets: Sequence[str], args: Sequence[str], **compile_kw: Any) -> Sweep:
    """Every member compiled (with `compile_kw` as for compile_spec), checked for duplicates, its shared stages
    found; SpecError names the members and values that fail."""
    from .compile import compile_spec

    axes = parse_axes(args, sets)
    base = compile_spec(path, profile, sets, **compile_kw)
    members, failures = [], {}
    for name, overrides in member_names(base.spec.name, axes):
        texts = [f"{key}={value}" for key, value in overrides.items()] + [f"name={name}"]
        try:
            members.append(Member(name, overrides, compile_spec(path, profile, sets, sweep=texts, **compile_kw)))
        except SpecError as exc:
            failures[name] = (overrides, exc.issues)
    if failures:
        raise SpecError(_merge_failures(failures, axes, len(members) + len(failures)))
    _refuse_duplicates(members, axes)
    folder = Path(base.spec.output_dir) / f"{base.spec.name}{SWEEP_SUFFIX}"
    members, links = share(members)
    return Sweep(str(path), base.spec.name, folder, axes, tuple(members), links)


def _merge_failures(failures: dict[str, tuple[dict[str, str], tuple[Issue, ...]]], axes: Sequence[Axis],
                    total: int) -> list[Issue]:
    """One issue per problem: one that every member has (an unknown key) is located at its whole --sweep; one
    that some members have (a value that does not validate) names them and their values."""
    seen: dict[tuple, list[str]] = {}
    for name, (overrides, issues) in failures.items():
        values = ", ".join(f"{key}={value}" for key, value in overrides.items())
        for issue in issues:
            key = (_axis_of(issue.loc, axes), issue.path, issue.message, issue.severity)
            seen.setdefault(key, []).append(f"{name}: {values}")
    merged = []
    for (loc, path, message, severity), names in seen.items():
        if len(names) < total:
            message += f" (sweep member{'s' if len(names) > 1 else ''} {'; '.join(names)})"
        merged.append(Issue(loc, path, message, severity))
    return merged


def _axis_of(loc: Location, axes: Sequence[Axis]) -> Location:
    """`--sweep key=value` (one member's) -> `--sweep key=v1,v2` (the axis as given)."""
    key = loc.file.removeprefix("--sweep ").partition("=")[0] if loc.file.startswith("--sweep ") else None
    return next((axis.loc for axis in axes if axis.key == key), loc)


def _refuse_duplicates(members: list[Member], axes: Sequence[Axis]) -> None:
    """Members whose every stage has the same hash would train the same weights twice."""
    groups: dict[tuple, list[Member]] = {}
    for member in members:
        groups.setdefault(tuple((s.name, s.hash) for s in member.plan.stages), []).append(member)
    issues = []
    for same in (g for g in groups.values() if len(g) > 1):
        differ = [axis for axis in axes if len({m.overrides[axis.key] for m in same}) > 1]
        values = "; ".join(f"{m.name} ({', '.join(f'{a.key}={m.overrides[a.key]}' for a in differ)})" for m in same)
        issues.append(Issue(differ[0].loc if differ else Location("--sweep"), differ[0].key if differ else "",
                            f"sweep members {values} are the same spec after validation (every stage has the same "
                            "hash): they would train the same weights; drop the duplicate values"))
    if issues:
        raise SpecError(issues)


def share(members: list[Member]) -> tuple[list[Member], dict[str, str]]:
    """Which folder trains each stage that several members have (same hash, hence same folder name in each
    member's run folder), and each member's plan with the cache status of that folder."""
    by_folder: dict[str, list[str]] = {}
    for member in members:
        for stage in member.plan.stages:
            by_folder.setdefault(Path(stage.run_dir).name, []).append(stage.run_dir)
    links: dict[str, str] = {}
    for folder_name, paths in by_folder.items():
        owner = _owner(folder_name, paths)
        links.update({p: owner for p in paths if p != owner and not _real_dir(p)})
    shared = []
    for member in members:
        plan = member.plan
        for stage in plan.stages:
            if stage.run_dir in links:
                plan = plan.replace_stage(dataclasses.replace(stage, cache=cache_status(links[stage.run_dir])))
        shared.append(dataclasses.replace(member, plan=plan))
    return shared, links


def _owner(folder_name: str, paths: list[str]) -> str:
    """A finished folder (a member's, then any other run's under output_dir), else one with checkpoints to resume,
    else the first member's."""
    root = Path(paths[0]).parent.parent
    elsewhere = sorted(str(p) for p in root.glob(f"*/{folder_name}") if str(p) not in paths)
    done = [p for p in [*paths, *elsewhere] if _real_dir(p) and (Path(p) / DONE_MARKER).exists()]
    started = [p for p in paths if _real_dir(p) and cache_status(p) == "resume"]
    return (done or started or paths)[0]


def _real_dir(path: str) -> bool:
    return os.path.isdir(path) and not os.path.islink(path)


def manifest(sweep: Sweep) -> dict[str, Any]:
    """What <output_dir>/<name>-sweep/sweep.json holds (read by `flowspec status` and `flowspec report`)."""
    runs = []
    for member in sweep.members:
        root = Path(member.plan.spec.output_dir) / member.name
        stages, shared = {}, {}
        for stage in member.plan.stages:
            stages[stage.name] = Path(stage.run_dir).name
            if stage.run_dir in sweep.links:
                shared[stage.name] = os.path.relpath(sweep.links[stage.run_dir], sweep.folder)
        runs.append({"name": member.name, "folder": os.path.relpath(root, sweep.folder),
                     "overrides": dict(member.overrides), "stages": stages, "shared": shared})
    return {"spec": sweep.spec, "axes": {axis.key: list(axis.values) for axis in sweep.axes}, "runs": runs}


def render(sweep: Sweep, plans: Sequence[Plan]) -> str:
    """`flowspec plan --sweep`: each member's plan under a line with its values, then what is shared."""
    out = [f"sweep {sweep.name}: {len(sweep.members)} runs over {' x '.join(a.key for a in sweep.axes)}; "
           f"manifest {sweep.folder / MANIFEST}"]
    for member, plan in zip(sweep.members, plans):
        values = " ".join(f"{key}={value}" for key, value in member.overrides.items())
        out += ["", f"== {member.name}  ({values})", plan.as_text()]
    if sweep.links:
        out.append("")
        out += [f"shared: {path} -> {owner} (same hash: trained once)" for path, owner in sorted(sweep.links.items())]
    return "\n".join(out)
