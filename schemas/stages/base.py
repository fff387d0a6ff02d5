"""What every stage kind has, and what each kind declares about itself for the compiler.

A kind is one class: its fields (the YAML keys), and beside them, as class variables and methods,
everything the compiler needs to know about it: whether it refines trained weights (`needs_start`),
which other fields name an earlier stage it loads (`reads`), the objective its `train` op runs, the
ops it adds to the plan (`extra_ops`) and its own semantic checks (`findings`). The runtime binds the
objective's name to code (runtime/objectives/); nothing else dispatches on the kind.

The blocks `data`, `timesteps`, `optimizer`, `train` and `executor` of a stage are the spec's root
blocks deep-merged with the stage's own (the compiler's `inherit` pass), so the runtime always sees
complete blocks.
"""
from __future__ import annotations

from typing import Any, ClassVar, Iterator, NamedTuple

from pydantic import Field

from ..base import NAME_PATTERN, Block, Seed
from ..data import Data
from ..executor import Executor
from ..lora import LoRA
from ..optim import Optimizer
from ..rewards import PromptEnhancer
from ..timesteps import Timesteps
from ..train import Train

INHERITED_BLOCKS = ("data", "timesteps", "optimizer", "train", "executor")


class OpSpec(NamedTuple):
    """One operator of a stage's plan: its name, its parameters, and the stage key it comes from."""

    op: str
    params: dict[str, Any]
    path: tuple = ()


class Note(NamedTuple):
    """A semantic finding about a stage: the key path under the stage, the message, its severity."""

    path: tuple
    message: str
    severity: str = "error"


class StageBase(Block):
    # ---- what the compiler needs to know about the kind (overridden by each kind)
    needs_start: ClassVar[bool] = False  # refines trained weights: `from` (or model.init.path) is required
    reads: ClassVar[tuple[str, ...]] = ()  # fields naming an earlier stage it loads; omitted, they mean `from`
    objective: ClassVar[str] = ""  # the runtime objective its `train` op runs
    generates: ClassVar[bool] = False  # generates images from prompts (so a prompt_enhancer applies)
    trains: ClassVar[str] = "denoiser"  # what it trains: the denoiser, or (an autoencoder stage) the latent VAE

    name: str = Field(pattern=NAME_PATTERN, description="Unique stage name (lower case, digits, _).")
    from_: str | None = Field(None, alias="from", description="Start from an earlier stage (its name) or a local "
                              "path (anything with a '/'); omitted: fresh weights per model.init.")
    steps: int = Field(gt=0, description="Optimizer steps of this stage.")
    seed: Seed | None = Field(None, description="Stage seed; omitted: derived from the spec seed and the stage name.")
    lora: LoRA | None = Field(None, description="Train low-rank adapters instead of all weights.")
    prompt_enhancer: PromptEnhancer | None = Field(
        None, description="Rewrites the prompts this stage generates images from (stages that generate: "
        "reward_feedback, flow_grpo, diffusion_dpo).")
    data: Data = Field(description="Data, merged over the spec's `data`.")
    timesteps: Timesteps = Field(description="Timestep sampling, merged over the spec's `timesteps`.")
    optimizer: Optimizer = Field(description="Optimizer, merged over the spec's `optimizer`.")
    train: Train = Field(description="Training settings, merged over the spec's `train`.")
    executor: Executor = Field(description="Where it runs, merged over the spec's `executor`.")

    # ---- the stage graph
    def written_refs(self) -> dict[str, str]:
        """{field: value} of the upstream fields as written (no defaults): what the graph check validates."""
        refs = {"from": self.from_, **{f: getattr(self, f) for f in self.reads}}
        return {k: v for k, v in refs.items() if v is not None}

    def refs(self) -> dict[str, str]:
        """{field: stage name or path} this stage loads; the `reads` fields default to `from`."""
        refs = {"from": self.from_, **{f: getattr(self, f) or self.from_ for f in self.reads}}
        return {k: v for k, v in refs.items() if v is not None}

    def holds_frozen_copy(self) -> bool:
        """A reference or teacher held beside the trained model (under LoRA, the start with its adapter switched
        off is the same model: no copy)."""
        refs = self.refs()
        return any(self.lora is None or refs[r] != self.from_ for r in ("reference", "teacher") if r in refs)

    def upstream(self) -> dict[str, str]:
        """{field: stage name} of the earlier stages this one loads (paths are not stages)."""
        return {k: v for k, v in self.refs().items() if "/" not in v}

    # ---- the plan
    def objective_name(self) -> str:
        return self.objective

    def validation_prompts_grid(self) -> tuple[str, ...]:
        """Rows of a second sample grid this kind draws beside train.samples' (DreamBooth's subject grid)."""
        return ()

    def extra_ops(self) -> Iterator[OpSpec]:
        """Ops of this kind between `data` and `train` (prior images, pairs, rewards, encoders)."""
        if self.prompt_enhancer is not None and self.generates:
            yield OpSpec("enhance_prompts", {"enhancer": self.prompt_enhancer.kind}, ("prompt_enhancer",))

    def closing_ops(self) -> Iterator[OpSpec]:
        """Ops of this kind after the evaluation, before the export (a distillation report)."""
        return iter(())

    def sampling(self) -> dict:
        """How this kind's trained model samples, over train.samples (a distilled student: its grid, no guidance)."""
        return {}

    def objective_options(self) -> Any:
        """Options the objective is built with besides the stage itself (custom kinds: `options`)."""
        return None

    # ---- semantic checks of the kind
    def findings(self, spec) -> Iterator[Note]:
        """Problems only this kind can have, found before anything is built (`spec`: the whole spec)."""
        if self.prompt_enhancer is not None and not self.generates:
            yield Note(("prompt_enhancer",), f"a {self.kind} stage generates no images from prompts (it trains on its "
                       "data's captions), so a prompt_enhancer would never run: remove it, or use it on a stage "
                       "that generates (reward_feedback, flow_grpo, diffusion_dpo)")
