"""Op `enhance_prompts`: the stage's prompt enhancer (runtime/enhance.py). From here on every image the
stage generates (rollouts, pairs, sample grids, the evaluation) is conditioned on the rewritten prompt,
and every score reads the original one."""
from __future__ import annotations

from ..data.stream import BatchStream
from ..enhance import build_enhancer
from ..sampling import latent_multiple
from . import op, spec_dir
from .context import StageContext


@op("enhance_prompts")
def enhance_prompts(ctx: StageContext, params: dict) -> None:
    block = ctx.stage.prompt_enhancer
    ctx.enhancer = build_enhancer(block, lambda count: data_prompts(ctx, count), spec_dir(ctx.plan))
    if ctx.dist.main:
        example = next(iter(ctx.stage.train.samples.prompts), "")
        print(f"[{ctx.label}] prompt enhancer {block.kind}: {example!r} -> {ctx.enhancer([example], ctx.seed)[0]!r}",
              flush=True)


def data_prompts(ctx: StageContext, count: int) -> list[str]:
    """The first `count` captions of the stage's data, in the order of its global batches."""
    return stream_captions(ctx.stage, ctx.bundle, ctx.seed, count, spec_dir(ctx.plan))


def stream_captions(stage, bundle, seed: int, count: int, folder: str | None = None) -> list[str]:
    multiple = 1 if bundle.denoiser.spec.kind == "mlp" else latent_multiple(bundle)
    stream = BatchStream(stage.data, seed, stage.train.global_batch, 1, multiple, spec_dir=folder)
    prompts, step = [], 0
    while len(prompts) < count:
        prompts += stream.batch(step, 0).captions
        step += 1
    return prompts[:count]


def conditioning(ctx: StageContext, prompts, seed: int | None = None) -> list[str]:
    """What the model is given for `prompts`: their rewrites under the stage's enhancer, else themselves."""
    if ctx.enhancer is None:
        return list(prompts)
    return ctx.enhancer(list(prompts), ctx.seed if seed is None else seed)
