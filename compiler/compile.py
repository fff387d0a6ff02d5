"""The compiler: an ordered list of named passes from a spec file to a Plan.

load -> migrate -> profile -> overrides -> inherit -> validate -> check -> lower -> select -> resolve -> cache

`select` keeps the stages named by `stages` (and what they read); `resolve` binds every op to the
runtime through the `resolver` it is given (none: the plan is not resolved, as for `validate`), and
with `runnable=True` refuses an op that cannot run, at its line, before anything is built.

`compile_spec(..., on_pass=fn)` calls fn(name, state) after each pass (`flowspec plan --dump-after`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

from .. import __version__
from ..schemas import SCHEMA_VERSION
from ..schemas.executor import Executor
from ..schemas.stages import INHERITED_BLOCKS
from . import checks_model  # noqa: F401  (registers its checks)
from .checks import Finding, run_checks
from .errors import Issue, Location, SpecError
from .locate import dotted, locate
from .lower import cache_status, lower
from .overrides import apply, inherit, parse_set, profile_overrides, switch_kind
from .plan import Plan
from .resolve import Resolver, refusals, resolve, select_stages
from .validate import position
from .yamlpos import PosDict, clone, load_file, to_plain

# Older spec versions are upgraded one step at a time: {version: function(tree) -> tree of version + 1}.
MIGRATIONS: dict[int, Callable[[PosDict], PosDict]] = {}
PASS_NAMES = ("load", "migrate", "profile", "overrides", "inherit", "validate", "check", "lower", "select", "resolve",
              "cache")


@dataclass
class State:
    path: str
    profile: str | None
    sets: tuple[str, ...]
    tree: PosDict | None = None
    spec: Any = None
    warnings: list[Issue] = field(default_factory=list)
    plan: Plan | None = None
    executor: str | None = None
    stages: tuple[str, ...] = ()
    resolver: Resolver | None = None
    runnable: bool = False
    declared: dict[str, Any] = field(default_factory=dict)
    sweep: tuple[str, ...] = ()  # one sweep member's KEY=VALUE settings, applied after `sets`
    unused: list = field(default_factory=list)  # findings of keys written where their stage kind never reads them

    @property
    def top(self) -> Location:
        return Location(self.path, 1, 1)


def _load(s: State) -> None:
    s.tree = load_file(s.path)


def _migrate(s: State) -> None:
    version = s.tree.get("flowspec")
    if not isinstance(version, int) or isinstance(version, bool):
        return  # validation reports a missing or malformed version key with its position
    if version > SCHEMA_VERSION:
        raise SpecError([Issue(locate(s.tree, ("flowspec",), s.top), "flowspec", f"spec version {version} is newer "
                               f"than this flowspec reads ({SCHEMA_VERSION}): upgrade flowspec")])
    while version < SCHEMA_VERSION and version in MIGRATIONS:
        s.tree = MIGRATIONS[version](s.tree)
        version += 1


def _profile(s: State) -> None:
    if s.profile:
        for override in profile_overrides(s.tree, s.profile, locate(s.tree, ("profiles",), s.top)):
            apply(s.tree, override)


def _overrides(s: State) -> None:
    if s.executor:  # `--executor` first: the --set keys that follow are keys of the kind that will run
        s.declared = declared_executors(s.tree)
        switch_kind(s.tree, "executor", s.executor, Executor, Location(f"--executor {s.executor}"))
    for text in s.sets:
        apply(s.tree, parse_set(text))
    for text in s.sweep:
        apply(s.tree, parse_set(text, "--sweep"))


def declared_executors(tree: PosDict) -> dict[str, Any]:
    """Each stage's executor block as the spec (and its profile) declares it, inherited from the root block;
    a stage whose block does not validate is left out (validation reports it after the switch, if it matters)."""
    from pydantic import TypeAdapter, ValidationError

    copy = clone(tree)
    inherit(copy, ("executor",))
    adapter, out = TypeAdapter(Executor), {}
    for stage in copy.get("stages") if isinstance(copy.get("stages"), list) else ():
        if isinstance(stage, PosDict) and isinstance(stage.get("name"), str):
            try:
                out[stage["name"]] = adapter.validate_python(to_plain(stage.get("executor") or {}))
            except (ValidationError, TypeError):
                continue
    return out


def _inherit(s: State) -> None:
    s.unused = list(stage_keys_unused(s.tree))  # what the stage itself says, before the root's blocks merge in
    inherit(s.tree, INHERITED_BLOCKS)


def stage_keys_unused(tree: PosDict) -> Iterator[Finding]:
    """Keys set under a stage whose kind never reads them (an autoencoder stage's timesteps or sample prompts) to
    another value than the root's; inherited from the root (or repeated, as in a dumped spec) they are the other
    stages' settings and fine."""
    from ..schemas.stages.autoencoder import DENOISER_ONLY

    def at(node, path):
        for key in path:
            node = node.get(key) if isinstance(node, PosDict) else None
        return node

    stages = tree.get("stages")
    for i, stage in enumerate(stages if isinstance(stages, list) else ()):
        if not isinstance(stage, PosDict) or stage.get("kind") != "autoencoder":
            continue
        for path in DENOISER_ONLY:
            node = at(stage, path)
            if node is not None and to_plain(node) != to_plain(at(tree, path)):
                yield Finding(("stages", i, *path), f"an autoencoder stage trains the VAE alone: "
                              f"{'.'.join(path)} is a denoiser stage's setting, never read here (remove it)")


def _validate(s: State) -> None:
    from .validate import validate

    s.spec = validate(s.tree, s.top)


def _check(s: State) -> None:
    issues = [Issue(locate(s.tree, f.path, s.top), dotted(s.tree, f.path), f.message, f.severity)
              for f in [*s.unused, *run_checks(s.spec)]]
    issues.sort(key=position)
    errors = [i for i in issues if i.severity == "error"]
    if errors:
        raise SpecError(issues)
    s.warnings = issues


def _lower(s: State) -> None:
    stages = lower(s.spec, s.tree, s.top)
    s.plan = Plan(name=s.spec.name, source=s.path, profile=s.profile, overrides=s.sets + s.sweep, version=__version__,
                  spec=s.spec, stages=stages, warnings=tuple(s.warnings),
                  declared={name: block for name, block in s.declared.items() if block.kind != s.executor})


def _select(s: State) -> None:
    s.plan = select_stages(s.plan, s.stages)


def _resolve(s: State) -> None:
    if s.resolver is None:
        return
    s.plan = resolve(s.plan, s.resolver)
    if s.runnable and refusals(s.plan):
        raise SpecError(refusals(s.plan))


def _cache(s: State) -> None:
    import dataclasses

    for stage in s.plan.stages:
        s.plan = s.plan.replace_stage(dataclasses.replace(stage, cache=cache_status(stage.run_dir)))


PASSES: tuple[tuple[str, Callable[[State], None]], ...] = (
    ("load", _load), ("migrate", _migrate), ("profile", _profile), ("overrides", _overrides),
    ("inherit", _inherit), ("validate", _validate), ("check", _check), ("lower", _lower), ("select", _select),
    ("resolve", _resolve), ("cache", _cache),
)
assert tuple(name for name, _ in PASSES) == PASS_NAMES


def compile_spec(path: str, profile: str | None = None, sets: Sequence[str] = (),
                 on_pass: Callable[[str, State], None] | None = None, *, stages: Sequence[str] | None = None,
                 resolver: Resolver | None = None, runnable: bool = False, executor: str | None = None,
                 sweep: Sequence[str] = ()) -> Plan:
    """Compile a spec file into a Plan; user errors raise SpecError with every issue found. `executor`
    (`--executor`) sets the kind of the root and stage executor blocks, after the profile, before `sets`;
    `sweep` (compiler/sweep.py) holds one sweep member's KEY=VALUE settings, applied after `sets`."""
    state = State(path=str(path), profile=profile, sets=tuple(sets), stages=tuple(stages or ()), resolver=resolver,
                  runnable=runnable, executor=executor, sweep=tuple(sweep))
    for name, run in PASSES:
        run(state)
        if on_pass is not None:
            on_pass(name, state)
    return state.plan
