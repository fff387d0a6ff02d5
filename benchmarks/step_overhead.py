"""Cost of a flowspec training step against a hand-written loop on the same model and batch.

    python benchmarks/step_overhead.py [--steps 30] [--spec specs/quickstart.yaml]
    python benchmarks/step_overhead.py --tiny [--steps 600]

--tiny: the framework's own cost per step, in milliseconds, on specs/toy2d.yaml (its 4x256 MLP, batch 512,
AdamW, EMA, cosine schedule), where the model is so small that everything around it shows. flowspec runs
its stage through compile -> plan -> the stage's ops -> the training loop (Trainer.advance: the step, its
log line every log_every steps, its checkpoint and stop decisions); a plain loop samples the same data and
does the same arithmetic with the same fused AdamW, and a third with torch's default AdamW shows what the
fused kernel is worth. Steps of each are interleaved, in turns of order, so drift in the machine's load and the
caches hit all alike; the overhead is the median of the paired differences (the steps that log weighed in at
their share).
Goal: <= 0.3 ms per step.

Both loops do the same work per step: encode the captions with the same text encoder, draw t
(logit-normal) and noise, a forward and backward pass of the quickstart's UNet (with SDXL's size
micro-conditioning), gradient clipping, a fused AdamW
step (as flowspec's), the LR schedule and an EMA update. flowspec's step adds its objective plumbing, condition
dropout, NaN checks and metrics. Steps are interleaved (flowspec, hand, flowspec, ...) so drift
in the machine's load hits both alike; the medians are compared. Goal: ratio <= 1.03 on CPU.
"""
import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch

from flowspec.compiler import compile_spec
from flowspec.runtime.data.stream import Batch
from flowspec.runtime.models.bundle import build_bundle
from flowspec.runtime.objectives.flow_matching import FlowMatching
from flowspec.runtime.ops.context import StageContext
from flowspec.runtime.train.loop import LoopConfig, Trainer

ROOT = Path(__file__).resolve().parent.parent


class FixedStream:
    """The same batch every time, so both loops see identical inputs."""

    def __init__(self, batch):
        self.fixed = batch

    def batch(self, step, micro):
        return self.fixed


def make_batch(stage, seed=0):
    from flowspec.runtime.data.stream import BatchStream

    stream = BatchStream(stage.data, seed, stage.train.global_batch, 1, 4)
    return stream.batch(0, 0)


def flowspec_step_fn(spec, stage, batch: Batch, run_dir: Path):
    bundle = build_bundle(spec.model, seed=0)
    objective = FlowMatching(StageContext(stage=stage, seed=0, device=torch.device("cpu"), bundle=bundle,
                                          feed=FixedStream(batch)))
    config = LoopConfig(steps=10**9, accumulation=1, seed=0, run_dir=run_dir, label="bench",
                        device=torch.device("cpu"), max_grad_norm=stage.train.max_grad_norm)
    trainer = Trainer(config, bundle.trainable_modules(), objective, stage.train, stage.optimizer)
    return trainer.train_step


def plain_update(params: list, stage, fused: bool = True):
    """What a hand-written loop does with a loss: backward, clip, AdamW (torch's fused kernel, as flowspec's, or
    its default), the stage's schedule, then the EMA (the same arithmetic as flowspec's)."""
    from flowspec.runtime.train.optim import lr_factor

    opt = torch.optim.AdamW(params, lr=stage.optimizer.lr, betas=tuple(stage.optimizer.betas), eps=stage.optimizer.eps,
                            weight_decay=stage.optimizer.weight_decay, fused=fused or None)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(stage.optimizer.schedule, s, stage.steps))
    ema, decay = [p.detach().clone() for p in params], stage.train.ema.decay

    def update(loss):
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, stage.train.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            torch._foreach_mul_(ema, decay)
            torch._foreach_add_(ema, params, alpha=1 - decay)
        return loss

    return update


def hand_step_fn(spec, stage, batch: Batch):
    bundle = build_bundle(spec.model, seed=0)
    net, encoder = bundle.denoiser.net, bundle.text_encoder
    update = plain_update([p for m in (net, encoder) for p in m.parameters()], stage)
    gen = torch.Generator().manual_seed(0)
    x0 = batch.x
    assert spec.model.kind == "unet", "the hand-written loop is written for the quickstart's UNet"
    time_ids = torch.tensor([[batch.height, batch.width, 0, 0, batch.height, batch.width]], dtype=torch.float32)

    def step():
        text = encoder(batch.captions)
        t = torch.sigmoid(torch.randn(x0.shape[0], generator=gen))
        eps = torch.randn(x0.shape, generator=gen)
        tt = t.view(-1, 1, 1, 1)
        x_t = (1 - tt) * x0 + tt * eps
        added = {"text_embeds": text.pooled, "time_ids": time_ids.repeat(x0.shape[0], 1)}
        v = net(sample=x_t, timestep=t * 1000, encoder_hidden_states=text.states,
                encoder_attention_mask=text.mask.float(), added_cond_kwargs=added, return_dict=False)[0]
        return update(((v - (eps - x0)) ** 2).mean()).item()

    return step


def stage_trainer(spec_path: str, out: Path, sets: list[str]):
    """flowspec's trainer for the spec's first stage, built as `flowspec run` builds it (the ops before
    `train`, then the train op's own builder), begun (restored, logs opened) but not run."""
    from flowspec.runtime.ops.train import build_trainer, context_before_train

    plan = compile_spec(spec_path, sets=[f"output_dir={out}", *sets])
    ctx, params = context_before_train(plan, plan.stages[0], torch.device("cpu"))
    trainer = build_trainer(ctx, params)
    trainer.begin()
    return ctx, trainer


def plain_toy_step(ctx, fused: bool):
    """A hand-written flow-matching step on a copy of the stage's MLP and the same data source: sample points,
    t ~ U(0, 1) and noise from one generator, MSE to the velocity, clip, AdamW, the same schedule, EMA."""
    from flowspec.runtime.data.toy2d import sample_toy2d

    stage, net = ctx.stage, copy.deepcopy(ctx.bundle.denoiser.net)
    update, batch = plain_update(list(net.parameters()), stage, fused), stage.train.global_batch
    gen, distribution = torch.Generator().manual_seed(0), stage.data.source.distribution

    def step():
        x0 = sample_toy2d(distribution, batch, gen)
        t, eps = torch.rand(batch, generator=gen), torch.randn(batch, 2, generator=gen)
        x_t = (1 - t[:, None]) * x0 + t[:, None] * eps
        return update(((net(x_t, t) - (eps - x0)) ** 2).mean())

    return step


def tiny(args) -> None:
    torch.set_num_threads(args.threads)  # one thread: the per-step host cost is what is measured, not threading
    with tempfile.TemporaryDirectory() as tmp:
        ctx, trainer = stage_trainer(args.spec, Path(tmp), [f"stages.pretrain.steps={args.steps * 10}",
                                     "train.checkpoint.every=1000000", "train.samples.every=1000000"])
        every = trainer.config.log_every
        loops = {"flowspec": trainer.advance, "plain (fused AdamW)": plain_toy_step(ctx, fused=True),
                 "plain (default AdamW)": plain_toy_step(ctx, fused=False)}
        times = {name: [] for name in loops}
        for i in range(args.steps + every):  # the first log_every steps warm up
            # The order turns every step (a step runs faster right after another one, its data still cached).
            for name, fn in list(loops.items())[::1 if i % 2 else -1]:
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        trainer.progress.close()
    times = {name: value[every:] for name, value in times.items()}
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    params = sum(p.numel() for p in ctx.bundle.denoiser.net.parameters())
    print(f"toy: {ctx.spec.model.kind}/{ctx.spec.model.preset} ({params} "
          f"parameters), batch {ctx.stage.train.global_batch}, torch threads {torch.get_num_threads()}, "
          f"{args.steps} steps each, interleaved")
    for name, value in med.items():
        print(f"{name:>22}: median {value:.3f} ms/step ({1000 / value:.0f} it/s)")
    # Each flowspec step against the plain step run right after it (paired differences cancel the machine's
    # drift); the steps that log (every log_every-th, with their read-back) are weighed in at their share.
    paired = [(a - b) * 1000 for a, b in zip(times["flowspec"], times["plain (fused AdamW)"])]
    logging = [d for i, d in enumerate(paired) if (i + 1) % every == 0]
    plain = [d for i, d in enumerate(paired) if (i + 1) % every]
    overhead = ((every - 1) * statistics.median(plain) + statistics.median(logging)) / every
    print(f"framework overhead: {overhead:.3f} ms/step (median paired difference {statistics.median(plain):.3f} on "
          f"plain steps, {statistics.median(logging):.3f} on the steps that log; goal <= 0.3)")
    return overhead


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--spec", default=None)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="the framework's own cost per step on the 2-D toy")
    parser.add_argument("--threads", type=int, default=1, help="--tiny: torch threads")
    args = parser.parse_args()
    if args.tiny:
        args.spec = args.spec or str(ROOT / "specs/toy2d.yaml")
        args.steps = args.steps if args.steps != 30 else 600
        tiny(args)
        return
    args.spec = args.spec or str(ROOT / "specs/quickstart.yaml")
    plan = compile_spec(args.spec)
    spec, stage = plan.spec, plan.spec.stages[0]
    batch = make_batch(stage)
    with tempfile.TemporaryDirectory() as tmp:
        ours = flowspec_step_fn(spec, stage, copy.deepcopy(batch), Path(tmp))
        hand = hand_step_fn(spec, stage, copy.deepcopy(batch))
        times = {"flowspec": [], "hand": []}
        for i in range(args.warmup + args.steps):
            for name, fn in (("flowspec", ours), ("hand", hand)):
                start = time.perf_counter()
                fn()
                if i >= args.warmup:
                    times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"model: {spec.model.kind}/{spec.model.preset}, batch {stage.train.global_batch} at "
          f"{batch.height}x{batch.width}, torch threads {torch.get_num_threads()}, {args.steps} steps each")
    for name, value in med.items():
        print(f"{name:>9}: median {value * 1000:.1f} ms/step (min {min(times[name]) * 1000:.1f})")
    print(f"ratio flowspec / hand-written: {med['flowspec'] / med['hand']:.3f} (goal <= 1.03)")


if __name__ == "__main__":
    main()
