"""What every training stage does around its objective: identity and drift check, model set-up,
the loop's configuration, sample grids, evaluation, export and the finished marker."""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path

import torch

from ...compiler import Issue, Location, SpecError
from ...compiler.lower import DONE_MARKER, HASH_EXCLUDED
from ...compiler.plan import Plan, StagePlan
from ..distributed import SINGLE, Distributed
from ..models.bundle import ModelBundle, build_bundle, export_bundle, load_backbone, load_exported
from ..train.checkpoint import (capture_rng, latest_checkpoint, read_identity, restore_rng, spec_differences,
                                write_identity)
from ..train.loop import LoopConfig, LoopHooks, Trainer

LOCK_FILE = ".lock"


class StageRunner:
    kinds: tuple[str, ...] = ()

    def __init__(self, plan: Plan, stage_plan: StagePlan, device: torch.device, fresh: bool = False,
                 dist: Distributed = SINGLE, stop_requested=lambda: False):
        self.plan, self.stage_plan, self.device, self.fresh = plan, stage_plan, device, fresh
        self.dist, self.stop_requested = dist, stop_requested
        self.spec = plan.spec
        self.stage = next(s for s in plan.spec.stages if s.name == stage_plan.name)
        self.run_dir = Path(stage_plan.run_dir)
        self.label = stage_plan.name

    # ---------------------------------------------------------------------------- identity
    def identity(self) -> dict:
        """The resolved configuration that determines this stage's weights (its hash covers the same)."""
        stage = self.stage.model_dump(mode="json", by_alias=True, exclude=HASH_EXCLUDED)
        return {"hash": self.stage_plan.hash, "seed": self.stage_plan.seed,
                "model": self.spec.model.model_dump(mode="json", by_alias=True), "stage": stage,
                "upstream": {f: self.plan.stage(n).hash for f, n in self.stage_plan.upstream.items()}}

    def check_drift(self) -> None:
        """Refuse to silently abandon an unfinished run of this stage whose spec has since changed."""
        if self.fresh:
            return
        mine = self.identity()
        for other in sorted(self.run_dir.parent.glob(f"{self.stage.name}-*")):
            if other == self.run_dir or (other / DONE_MARKER).exists() or latest_checkpoint(other) is None:
                continue
            theirs = read_identity(other)
            if theirs is None:
                continue
            changed = spec_differences(theirs, mine)
            step = int(latest_checkpoint(other).stem.split("-")[1])
            raise SpecError([Issue(Location(self.plan.source), f"stages.{self.stage.name}",
                                   f"an unfinished run of this stage ({other}, checkpoint at step {step}) was made "
                                   f"with a different spec: {'; '.join(changed) or 'flowspec version'}. Resuming "
                                   "it would mix two configurations: restore those keys to resume it, or pass "
                                   "--fresh to start a new run (its checkpoints are kept)")])

    # ------------------------------------------------------------------------------- model
    def build(self) -> ModelBundle:
        bundle = build_bundle(self.spec.model, self.stage_plan.seed, self.device)
        start = self.stage.from_
        if start is None:
            return bundle
        if "/" in start:
            path = Path(start)
            if (path / "denoiser").is_dir():
                load_exported(bundle, path)
            else:
                load_backbone(bundle.denoiser.net, self.spec.model, path)
            return bundle
        upstream = Path(self.plan.stage(start).run_dir)
        if not (upstream / DONE_MARKER).exists():
            raise RuntimeError(f"stage '{self.stage.name}' starts from '{start}', which has not finished ({upstream})")
        load_exported(bundle, upstream / "model")
        return bundle

    def loop_config(self, accumulation: int) -> LoopConfig:
        train = self.stage.train
        return LoopConfig(steps=self.stage.steps, accumulation=accumulation, seed=self.stage_plan.seed,
                          run_dir=self.run_dir, label=self.label, device=self.device, precision=train.precision,
                          log_every=train.log_every, checkpoint_every=train.checkpoint.every,
                          checkpoint_minutes=train.checkpoint.every_minutes, checkpoint_keep=train.checkpoint.keep,
                          samples_every=train.samples.every, max_grad_norm=train.max_grad_norm)

    # --------------------------------------------------------------------------------- run
    def run(self) -> None:
        self.check_drift()
        with self.exclusive():
            self.train_and_finish()

    @contextlib.contextmanager
    def exclusive(self):
        """Rank 0 holds an exclusive lock on the stage folder while the stage runs: a second `flowspec run`
        (here, in another shell, or a SLURM job) of the same stage is refused instead of mixing checkpoints.
        The OS releases the lock when the process ends, however it ends."""
        if not self.dist.main:
            yield
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / LOCK_FILE, "a+") as handle:
            self._lock(handle)
            handle.truncate(0)
            handle.write(f"process {os.getpid()} on {socket.gethostname()}")
            handle.flush()
            yield

    def check_not_running(self) -> None:
        """The lock, tried and released at once: refuses before any worker process is started."""
        if (self.run_dir / LOCK_FILE).exists():
            with open(self.run_dir / LOCK_FILE, "a+") as handle:
                self._lock(handle)

    def _lock(self, handle) -> None:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise SpecError([Issue(Location(self.stage_plan.loc), f"stages.{self.stage.name}",
                                   f"this stage is being run by {holder} ({self.run_dir}); wait for it to end, "
                                   "or stop it, before running the stage again")]) from None

    def train_and_finish(self) -> None:
        """Train, then (rank 0) export, evaluate and mark the stage finished; every rank leaves together."""
        if self.dist.main:
            write_identity(self.run_dir, self.identity())
        self.dist.barrier()
        started = time.time()
        self.bundle = self.build()
        caches = self.attach_caches()
        objective, accumulation = self.objective()
        hooks = LoopHooks(on_samples=self._isolated(self.sample_grid),
                          on_checkpoint=[lambda step: [c.flush() for c in caches]])
        self.wandb = self._start_wandb(hooks) if self.dist.main else None
        modules = {**self.bundle.trainable_modules(), **self.extra_modules()}
        self.trainer = Trainer(self.loop_config(accumulation), modules, objective, self.stage.train,
                               self.stage.optimizer, hooks, self.dist, self.stop_requested)
        if self.stage.train.compile:
            self.bundle.denoiser.net.compile()
        try:
            self.trainer.run()
            if self.dist.main:
                with self.weights_for_export():
                    export_bundle(self.bundle, self.run_dir / "model")
                    results = self._isolated(self.evaluate)()
                self.finish(results or {}, time.time() - started)
            self.dist.barrier()
        finally:
            if self.wandb is not None:
                self.wandb.finish()

    def split_batch(self) -> tuple[int, int]:
        """(micro-batch, accumulation) so that micro x processes x accumulation = train.global_batch."""
        train, world = self.stage.train, self.dist.world
        micro = train.micro_batch or train.global_batch // world
        accumulation = train.global_batch // (micro * world) if micro * world else 0
        if accumulation < 1 or micro * world * accumulation != train.global_batch:
            raise SpecError([Issue(Location(self.stage_plan.loc), f"stages.{self.stage.name}.train.global_batch",
                                   f"global_batch {train.global_batch} is not micro_batch {micro} x {world} "
                                   "process(es) x a whole number of accumulation steps")])
        return micro, accumulation

    def attach_caches(self) -> list:
        """Content-keyed caches of frozen encoders' outputs (data.cache), shared by stages and runs."""
        from ..data.cache import ContentCache
        from ..models.latent import VAECodec
        from ..models.text import PretrainedTextEncoder

        settings, caches = self.stage.data.cache, []
        if settings.latents and isinstance(self.bundle.codec, VAECodec):
            self.bundle.codec.cache = ContentCache(settings.dir, "latents")
            caches.append(self.bundle.codec.cache)
        if settings.text and isinstance(self.bundle.text_encoder, PretrainedTextEncoder):
            self.bundle.text_encoder.cache = ContentCache(settings.dir, "text")
            caches.append(self.bundle.text_encoder.cache)
        self.caches = caches
        return caches

    def log_data_report(self, report: list[dict]) -> None:
        """What the data pipeline will feed each phase: nothing is dropped or repeated silently."""
        if not report:
            return
        (self.run_dir / "data_report.json").write_text(json.dumps(report, indent=2))
        for phase in report:
            for part in phase["components"]:
                print(f"[{self.label}] phase {phase['phase']}: {part['name']} {part['kept']} of {part['found']} "
                      f"images in buckets {', '.join(phase['buckets'])}: {part['batches_per_epoch']} batches/epoch, "
                      f"{part['repeated']} repeated, {part['dropped']} dropped", flush=True)

    def _start_wandb(self, hooks: LoopHooks):
        tracking = self.spec.tracking
        if tracking.kind != "wandb":
            return None
        from ..train.logs import WandbLog

        log = WandbLog(tracking, self.run_dir, name=f"{self.spec.name}/{self.stage.name}",
                       run_id=self.stage_plan.hash[:16], config=self.identity())
        hooks.on_log.append(lambda record: log.log(record, record["step"]))
        return log

    def log_image(self, key: str, path: Path, step: int) -> None:
        if self.wandb is not None:
            self.wandb.image(key, path, step)

    def weights_for_export(self):
        import contextlib

        ema = self.trainer.ema
        return ema.swapped_in() if ema is not None else contextlib.nullcontext()

    def _isolated(self, fn):
        """Run `fn` without disturbing any RNG the training loop depends on (exact resume)."""
        def wrapped(*args):
            state = capture_rng()
            try:
                return fn(*args)
            finally:
                restore_rng(state)
        return wrapped

    def finish(self, results: dict, seconds: float) -> None:
        summary = {"stage": self.stage.name, "kind": self.stage.kind, "hash": self.stage_plan.hash,
                   "steps": self.stage.steps, "seconds": round(seconds, 1), **results}
        for cache in getattr(self, "caches", []):
            cache.flush()
            summary.setdefault("caches", {})[cache.folder.name] = cache.stats()
        (self.run_dir / "results.json").write_text(json.dumps(summary, indent=2))
        resolved = {"model": self.spec.model.model_dump(mode="json", by_alias=True),
                    "stage": self.stage.model_dump(mode="json", by_alias=True)}
        (self.run_dir / "resolved.json").write_text(json.dumps(resolved, indent=2))
        self.report(summary)
        (self.run_dir / DONE_MARKER).write_text(json.dumps(summary, indent=2))

    # hooks for subclasses
    def extra_modules(self) -> dict:
        """Trained modules that are not part of the exported model (e.g. the REPA projector)."""
        return {}

    def objective(self):
        raise NotImplementedError

    def sample_grid(self, step: int) -> None:
        pass

    def evaluate(self) -> dict:
        return {}

    def report(self, summary: dict) -> None:
        pass
