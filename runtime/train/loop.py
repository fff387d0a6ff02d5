"""The one training loop every training stage kind shares.

A stage supplies an objective (micro-batch -> loss) and the modules it trains; the loop owns
accumulation, clipping, the optimizer and schedule, EMA, mixed precision, checkpoints and exact
resume, NaN detection, logging, the progress bar and the periodic sample grids.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import torch
from torch import nn

from ..distributed import SINGLE, Distributed
from .checkpoint import capture_rng, latest_checkpoint, load_checkpoint, restore_rng, save_checkpoint
from .ema import EMA
from .logs import MetricsLog, Progress
from .optim import build_optimizer, build_scheduler
from .sharding import full, shard, shard_like
from .snapshot import WeightSnapshot


class TrainingDiverged(RuntimeError):
    """The loss or gradient became NaN/inf; the last good checkpoint is left as it was."""


class BaseChanged(RuntimeError):
    """A checkpoint was trained on another frozen base (LoRA), reference policy or teacher than this run
    loaded; `field` is the stage's key that names it."""

    def __init__(self, message: str, field: str = "from"):
        super().__init__(message)
        self.field = field


class Preempted(Exception):
    """The job was asked to stop (SLURM preemption or time limit): a checkpoint of this step was written."""

    def __init__(self, step: int):
        super().__init__(f"stopped at step {step} on request; checkpoint written")
        self.step = step


class Objective(Protocol):
    """(step, micro-batch) -> (loss, metrics); its random draws are functions of the step (core/randomness)."""

    def __call__(self, step: int, micro: int) -> tuple[torch.Tensor, dict]: ...


@dataclass
class LoopConfig:
    steps: int
    accumulation: int
    seed: int
    run_dir: Path
    label: str
    device: torch.device
    precision: str = "auto"
    log_every: int = 10
    checkpoint_every: int = 500
    checkpoint_minutes: float | None = None
    checkpoint_keep: int = 2
    samples_every: int = 500
    frozen_base: str | None = None  # under LoRA, the base's hash: checkpoints hold only what trains
    frozen_reference: str | None = None  # a preference stage's reference policy's hash: a resume never moves it
    frozen_teacher: str | None = None  # a distillation stage's teacher's hash: a resume never moves it
    max_grad_norm: float | None = 1.0


# The frozen models a checkpoint is pinned to: (role, how a message names it, the stage key naming it).
PINNED = (("base", "frozen base", "from"), ("reference", "reference", "reference"), ("teacher", "teacher", "teacher"))


@dataclass
class LoopHooks:
    on_log: list[Callable[[dict], None]] = field(default_factory=list)
    on_samples: Callable[[int], None] | None = None  # called with the step; must not touch training RNG
    on_checkpoint: list[Callable[[int], None]] = field(default_factory=list)  # e.g. flush caches
    on_resume: list[Callable[[int], None]] = field(default_factory=list)  # with the step training starts from
    # After each step (and after a resume): True finishes the stage early, with a checkpoint (e.g. gold).
    should_finish: Callable[[int], bool] | None = None


def uses_bf16(config: LoopConfig) -> bool:
    return config.precision == "bf16" or (config.precision == "auto" and config.device.type == "cuda")


def autocast(config: LoopConfig):
    if not uses_bf16(config):
        return contextlib.nullcontext()
    return torch.autocast(config.device.type, dtype=torch.bfloat16)


class Trainer:
    def __init__(self, config: LoopConfig, modules: dict[str, nn.Module], objective: Objective, train_spec,
                 optimizer_spec, hooks: LoopHooks | None = None, dist: Distributed = SINGLE,
                 stop_requested: Callable[[], bool] = lambda: False):
        self.config, self.modules, self.objective = config, modules, objective
        self.hooks, self.dist, self.stop_requested = hooks or LoopHooks(), dist, stop_requested
        # before the optimizer sees the parameters; an objective's weight snapshot (buffers) then keeps shards
        whole = getattr(objective, "replicated", ())
        held = {name: m for name, m in modules.items() if next(m.parameters(), None) is not None and name not in whole}
        self.shards = shard(held, train_spec.sharding, dist, config.label, config.device, uses_bf16(config),
                            {name: modules[name] for name in whole})
        if self.shards is not None:
            for module in modules.values():
                if isinstance(module, WeightSnapshot):
                    module.bind()
        self.params = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(optimizer_spec, param_groups(modules, getattr(objective, "learning_rates", dict)()),
                                         config.device)
        self.scheduler = build_scheduler(self.optimizer, optimizer_spec.schedule, config.steps)
        ema = train_spec.ema
        self.ema = EMA(modules, ema.decay, ema.warmup, ema.every) if ema is not None else None
        self.step = 0
        self.watch = DivergenceWatch(0, config.log_every, config.device)
        self.ddp = None  # DistributedDataParallel over the objective, made in begin() after the restore
        self.saved_at: int | None = None  # the step of the last checkpoint written or resumed from
        self.finished_early: int | None = None  # the step a should_finish hook ended the stage at

    # ------------------------------------------------------------------------------- state
    def state(self) -> dict:
        """Everything an exact resume needs; with shards, gathered to rank 0 (every rank calls it)."""
        if self.shards is not None:
            modules, optimizer = self.shards.state(self.optimizer)
            for name, module in self.unsharded().items():  # gathered like the shards (every rank, same order)
                whole = {key: full(value).cpu() for key, value in module.state_dict().items()}
                modules[name] = whole if self.dist.main else {}
        else:
            modules = {n: trained_state(m) for n, m in self.modules.items()}
            optimizer = self.optimizer.state_dict()
        return {"step": self.step, "modules": modules,
                **{f"frozen_{role}": getattr(self.config, f"frozen_{role}") for role, _, _ in PINNED},
                "optimizer": optimizer, "scheduler": self.scheduler.state_dict(),
                "ema": self.ema.state_dict() if self.ema else None, "rng": capture_rng()}

    def unsharded(self) -> dict[str, nn.Module]:
        """Under sharding, the modules outside the shards: an objective's weight snapshots (shards held as buffers)."""
        return {name: m for name, m in self.modules.items()
                if name not in self.shards.modules and name not in self.shards.replicated}

    def restore(self) -> bool:
        path = latest_checkpoint(self.config.run_dir)
        if path is None:
            return False
        state = load_checkpoint(path, self.config.device)
        for role, what, key in PINNED:
            saved, loaded = state.get(f"frozen_{role}"), getattr(self.config, f"frozen_{role}")
            if saved != loaded:
                raise BaseChanged(f"{path} was trained on {what} {saved}, but this run loaded {role} {loaded}: "
                                  f"the {role} changed under it", field=key)
        for name, module in self.modules.items():
            check_trained_keys(module, state["modules"][name], path)
        if self.shards is not None:  # loaded by name into each rank's shards
            self.shards.load(self.optimizer, state["modules"], state["optimizer"])
            for name, module in self.unsharded().items():
                current = module.state_dict()
                module.load_state_dict({k: shard_like(v, current[k]) for k, v in state["modules"][name].items()})
        else:
            for name, module in self.modules.items():
                module.load_state_dict(state["modules"][name], strict=False)
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        restore_rng(state["rng"])
        self.step = self.saved_at = state["step"]
        return True

    def checkpoint(self) -> None:
        self.saved_at = self.step
        state = self.state() if self.dist.main or self.shards is not None else None
        if self.dist.main:
            save_checkpoint(self.config.run_dir, self.step, state, self.config.checkpoint_keep)
        for hook in self.hooks.on_checkpoint:  # e.g. every rank flushes its own cache entries
            hook(self.step)
        # Nobody goes on (or leaves, when stopped) before the checkpoint is on disk; the wait for rank 0's
        # write is a barrier, not the next step's all-reduce, which has the shorter collective timeout.
        self.dist.barrier()

    # ------------------------------------------------------------------------------- steps
    def train_step(self) -> dict:
        """One optimizer step. Nothing here waits for the device: the loss, the gradient norm and the metrics stay
        tensors (read back by `check` at the steps that log, save or sample), and a non-finite loss or norm is
        noted on the device (`self.watch`) and raised by `check` before anything is logged, sampled or saved."""
        config = self.config
        total, extra = None, {}
        for micro in range(config.accumulation):
            last = micro == config.accumulation - 1
            # Gradients are averaged across ranks during the last micro-batch's backward only.
            if self.shards is not None:
                self.shards.sync_gradients(last)
            with self.ddp.no_sync() if self.ddp is not None and not last else contextlib.nullcontext():
                with autocast(config):
                    loss, metrics = (self.ddp or self.objective)(self.step, micro)
                # backward even when not finite: every rank must take part in the same collectives
                (loss / config.accumulation if config.accumulation > 1 else loss).backward()
            value = loss.detach().float()
            total = value if total is None else total + value
            extra = metrics
        if config.accumulation > 1:
            total = total / config.accumulation
        if self.shards is not None:
            self.shards.average_replicated()
            norm = self.shards.clip(self.params, config.max_grad_norm or float("inf"))
        else:
            norm = full(nn.utils.clip_grad_norm_(self.params, config.max_grad_norm or float("inf")))
        self.watch.note(total, norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        if self.ema is not None:
            self.ema.update(self.step)
        return {"loss": total, "grad_norm": norm, **extra}

    def check(self, loss: torch.Tensor | None = None, timed: bool = False) -> tuple[float, bool, bool]:
        """The one place a step is read back from the device, at the steps that need it (log lines, checkpoints,
        sample grids), so nothing bad is logged or saved: raises TrainingDiverged if any rank's loss or gradient
        norm was ever non-finite; else (the loss averaged over ranks, whether any rank was asked to stop, whether
        rank 0's clock says a timed checkpoint is due). With several processes, one small all_reduce."""
        bad = self.watch.first_bad()
        local = [float(loss) if loss is not None else 0.0, float(bad is not None), float(self.stop_requested()),
                 float(timed and self.dist.main)]
        loss_sum, diverged, stop, timed_main = self.dist.sum(local, self.config.device)
        if diverged:
            where = self.watch.describe() if bad else "a loss or gradient norm on another rank is not finite"
            raise TrainingDiverged(f"{where}; the last checkpoint is kept. Lower optimizer.lr or check the data.")
        return loss_sum / self.dist.world, bool(stop), bool(timed_main)

    def run(self) -> None:
        self.begin()
        try:
            while self._more(self.finish):
                self.advance()
        finally:
            self.progress.close()

    def begin(self) -> None:
        """Restore the latest checkpoint, wrap the objective for data parallelism, open the logs."""
        config, main = self.config, self.dist.main
        resumed = self.restore()
        self.watch = DivergenceWatch(self.step, config.log_every, config.device)
        if self.shards is None:
            self.ddp = self.dist.data_parallel(self.modules, self.objective, config.device)
        self.log = MetricsLog(config.run_dir, self.step) if main else None
        self.progress = Progress(config.label, config.steps, self.step, config.log_every, enabled=main)
        if resumed and main:
            print(f"[{config.label}] resumed from step {self.step}", flush=True)
        for hook in self.hooks.on_resume:
            hook(self.step)
        self.finish = self.hooks.should_finish or (lambda step: False)
        self.last_save = time.monotonic()

    def advance(self) -> None:
        """One step and what follows it: a log line, a checkpoint, a sample grid when due, or a checkpoint and
        Preempted when asked to stop. Ranks agree (stop, timed checkpoint) only at steps every rank knows to be
        special; a single process reads its stop flag every step (a Python flag, no device read)."""
        config, main = self.config, self.dist.main
        metrics = self.train_step()
        step, done = self.step, self.step == config.steps
        log = step % config.log_every == 0 or done
        save = step % config.checkpoint_every == 0 or done
        sample = self.hooks.on_samples is not None and step % config.samples_every == 0 and not done
        minutes = config.checkpoint_minutes
        timed = minutes is not None and time.monotonic() - self.last_save > 60 * minutes
        loss, stop = None, False
        sync = log or save or sample or (not self.dist.active and (timed or self.stop_requested()))
        if sync:
            loss, stop, timed_main = self.check(metrics["loss"] if log else None, timed)
        if self.dist.active:  # rank 0's clock decides, at the next step the ranks agree at
            timed = sync and timed_main
        if log:
            values = {k: (v.item() if isinstance(v, torch.Tensor) else v) for k, v in metrics.items()}
            record = {"step": step, **values, "loss": loss, "lr": self.scheduler.get_last_lr()[0],
                      "it_per_s": self.progress.rate(step)}
            if main:
                self.log.write(record)
                for hook in self.hooks.on_log:
                    hook(record)
            self.progress.update(step, record)
        if stop:
            self.checkpoint()
            raise Preempted(step)
        if save or timed:
            self.checkpoint()
            self.last_save = time.monotonic()
        # The final grid is the stage's `sample` op, drawn after training (also after a resume at the end).
        if sample:
            with self.whole_weights():
                if main:
                    self.hooks.on_samples(step)
                self.dist.barrier()  # the grid may take longer than the collective timeout

    @contextlib.contextmanager
    def whole_weights(self):
        """Whole weights (and EMA) in the modules, so that one rank alone may run them; every rank enters."""
        if self.shards is None or self.shards.gathering:
            yield
            return
        with self.shards.gathered():
            if self.ema is not None:
                self.ema.gather()
            try:
                yield
            finally:
                if self.ema is not None:
                    self.ema.gather(False)

    @contextlib.contextmanager
    def export_weights(self):
        """What samples, evaluations and the export use: the EMA weights if any, whole (every rank enters)."""
        with self.whole_weights(), self.ema.swapped_in() if self.ema is not None else contextlib.nullcontext():
            yield

    def unshard(self) -> dict[str, nn.Module]:
        """After training with shards (every rank): plain modules with the trained weights and an EMA over them,
        for the stage's later ops; the sharded ones are dropped."""
        plain = self.shards.plain()
        if self.ema is not None:
            ema = EMA(plain, self.ema.decay, self.ema.warmup, self.ema.every)
            ema.load_state_dict(self.ema.state_dict())
            self.ema = ema
        self.modules, self.shards = plain, None
        return plain

    def _more(self, finish: Callable[[int], bool]) -> bool:
        """Whether to take another step: not past the last one, and not asked to finish (the hook is asked
        after every step, the last included, and at the step training starts from)."""
        stop = finish(self.step)
        if self.step >= self.config.steps:
            return False
        if stop:  # the stage ends here: the checkpoint of this step says so to a resume
            self.finished_early = self.step
            if self.saved_at != self.step:
                self.check()
                self.checkpoint()
            if self.dist.main:
                print(f"[{self.config.label}] finished early at step {self.step}", flush=True)
        return not stop


def param_groups(modules: dict[str, nn.Module], rates: dict[str, float]) -> list:
    """The trained parameters; modules with a rate of their own (a discriminator, DMD2's fake score model) in
    groups of their own, which the schedule scales like the rest."""
    trained = {name: [p for p in m.parameters() if p.requires_grad] for name, m in modules.items()}
    if not rates:
        return [p for params in trained.values() for p in params]
    groups = [{"params": [p for name, params in trained.items() if name not in rates for p in params]}]
    return groups + [{"params": trained[name], "lr": lr} for name, lr in rates.items() if trained.get(name)]


def trained_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """What a checkpoint keeps of a module: everything, or only its trained parameters when some are frozen
    (LoRA: the adapters, not the base, which the stage reloads and checks by its hash)."""
    state = module.state_dict()
    if all(p.requires_grad for p in module.parameters()):
        return state
    trained = {name for name, p in module.named_parameters() if p.requires_grad}
    return {k: v for k, v in state.items() if k in trained}


def check_trained_keys(module: nn.Module, state: dict, path: Path) -> None:
    """A checkpoint's module state holds every trained parameter of `module` (and, when nothing is frozen, its
    buffers) and nothing the module lacks."""
    frozen = {name for name, p in module.named_parameters() if not p.requires_grad}
    optional = frozen | ({k for k, _ in module.named_buffers()} if frozen else set())
    known = set(module.state_dict())
    missing, unexpected = known - set(state) - optional, set(state) - known
    if unexpected or missing:
        raise ValueError(f"{path}: the checkpoint does not hold this stage's trained weights "
                         f"({len(unexpected)} unexpected, {len(missing)} missing)")


class DivergenceWatch:
    """The loss and gradient norm of each step since the last read-back, kept on the device: noting a step is one
    small copy, no host read. `first_bad` reads them back (Trainer.check, at least every log_every steps, so
    `every` rows hold all the steps not yet read) and remembers the first non-finite step."""

    def __init__(self, step: int, every: int, device: torch.device):
        self.values = torch.zeros(every, 2, device=device)
        self.step = self.checked = step
        self.bad: tuple[int, float, float] | None = None

    def note(self, loss: torch.Tensor, norm: torch.Tensor) -> None:
        self.step += 1
        torch.stack([loss.float(), norm.float()], out=self.values[(self.step - 1) % len(self.values)])

    def first_bad(self) -> int | None:
        if self.bad is None and self.step > self.checked:
            rows = self.values.tolist()
            for step in range(max(self.checked, self.step - len(rows)) + 1, self.step + 1):
                loss, norm = rows[(step - 1) % len(rows)]
                if not (math.isfinite(loss) and math.isfinite(norm)):
                    self.bad = (step, loss, norm)
                    break
            self.checked = self.step
        return self.bad[0] if self.bad else None

    def describe(self) -> str:
        step, loss, norm = self.bad
        return f"the loss is {loss} and the gradient norm {norm} at step {step}"
