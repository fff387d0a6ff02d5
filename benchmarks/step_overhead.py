"""Cost of a flowspec training step against a hand-written loop on the same model and batch.

    python benchmarks/step_overhead.py [--steps 30] [--spec specs/quickstart.yaml]

Both loops do the same work per step: encode the captions with the same text encoder, draw t
(logit-normal) and noise, a forward and backward pass of the quickstart's UNet (with SDXL's size
micro-conditioning), gradient clipping, an AdamW
step, the LR schedule and an EMA update. flowspec's step adds its objective plumbing, condition
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


def hand_step_fn(spec, stage, batch: Batch):
    bundle = build_bundle(spec.model, seed=0)
    net, encoder = bundle.denoiser.net, bundle.text_encoder
    params = [p for m in (net, encoder) for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=stage.optimizer.lr, betas=stage.optimizer.betas, eps=stage.optimizer.eps,
                            weight_decay=stage.optimizer.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    ema = [p.detach().clone() for p in params]
    decay = stage.train.ema.decay
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
        loss = ((v - (eps - x0)) ** 2).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, stage.train.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            for e, p in zip(ema, params):
                e.mul_(decay).add_(p, alpha=1 - decay)
        return loss.item()

    return step


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--spec", default=str(ROOT / "specs/quickstart.yaml"))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
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
