"""flowspec's training step against a hand-written one, on one device, in one process.

    python benchmarks/gpu_step.py                      # DiT-XL/2 and the SD3-medium-like MMDiT, 256 px
    python benchmarks/gpu_step.py --model dit_xl --steps 20 --json gpu_step.json
    python benchmarks/gpu_step.py --tiny               # the same code on the CPU in seconds (a test runs it;
                                                       # torch.compile's backend is dynamo's eager one there)

For each model it measures, on the same batch, model and precision (bf16 autocast over fp32 weights on a GPU):
  peak    the dense bf16 matmul rate of the device (the MFU denominator);
  ref     a hand-written loop: the diffusers model, plain PyTorch, fused AdamW, latents and condition already
          on the device, flow matching with logit-normal t; eager and torch.compile'd (whole model);
  flowspec  the stage built from a spec by compile -> plan -> the stage's ops -> the training loop, stepped
          with Trainer.advance (its log line every log_every steps included); its data plumbing is given the
          same precomputed latents and condition, as data.cache.latents / data.cache.text give a real run.
FLOPs are counted once per step with torch's FlopCounterMode; MFU = achieved / peak. Beside each flowspec
row: `flowspec plan`'s per-device memory and step-time estimates for the declared accelerator, and the
host synchronisations counted inside one step (CUDA's sync debug mode; none expected).
"""
import argparse
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from flowspec.compiler import compile_spec
from flowspec.runtime.data.stream import Batch
from flowspec.runtime.models.latent import PixelCodec
from flowspec.runtime.models.text import TextCondition

# model -> (spec's model block, batch, latent (C, H, W), text tokens and widths or None, image pixels,
# the class count of a class-conditional model)
MODELS = {
    "dit_xl": dict(model="{kind: dit, preset: xl, latent: {kind: vae, preset: sdxl}}", batch=256, latent=(4, 32, 32),
                   text=None, pixels=256, classes=1000),
    "sd3_medium": dict(model="{kind: mmdit, preset: sd3_medium, latent: {kind: vae, preset: sd3}, "
                             "text_encoder: {kind: builtin, num_layers: 1, max_tokens: 333}}",
                       batch=64, latent=(16, 32, 32), text=(333, 4096, 2048), pixels=256),
}
TINY = {
    "dit_xl": dict(model="{kind: dit, preset: tiny, latent: {kind: vae, preset: tiny}}", batch=4, latent=(4, 8, 8),
                   text=None, pixels=16, classes=18),
    "sd3_medium": dict(model="{kind: mmdit, preset: tiny, latent: {kind: vae, preset: tiny}, "
                             "text_encoder: {kind: builtin, num_layers: 1, max_tokens: 12}}",
                       batch=4, latent=(4, 16, 16), text=(12, 64, 64), pixels=32),
}
SPEC = """\
flowspec: 1
name: gpu_step
seed: 0
model: {model}
data:
  source: {{kind: shapes, num_images: 4096}}
  curriculum: [{{at_step: 0, resolution: {pixels}, complexity: [1, 3]}}]
timesteps: {{sampler: {{kind: logit_normal}}}}
optimizer: {{kind: adamw, lr: 1.0e-4, schedule: {{kind: constant, warmup_steps: 0}}}}
train:
  global_batch: {batch}
  precision: {precision}
  compile: {compile}
  max_grad_norm: 1.0
  cfg_dropout: 0.1
  log_every: 10
  checkpoint: {{every: 1000000}}
  samples: {{every: 1000000, prompts: ["a red circle"]}}
executor: {{kind: local, gpu: {gpu}}}
stages:
  - {{name: pretrain, kind: pretrain, steps: 1000000}}
"""


def device_sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device, tiny: bool) -> float:
    """TFLOP/s of the best of a few large bf16 (GPU) or fp32 (CPU) square matmuls."""
    n, dtype = (512, torch.float32) if tiny else (8192, torch.bfloat16)
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    best = float("inf")
    for _ in range(3 if tiny else 10):
        device_sync(device)
        start = time.perf_counter()
        for _ in range(5):
            a @ b
        device_sync(device)
        best = min(best, (time.perf_counter() - start) / 5)
    return 2 * n**3 / best / 1e12


def inputs(case, device, seed=0):
    """The precomputed batch both loops train on: latents, class labels or text states, pooled text."""
    g = torch.Generator().manual_seed(seed)
    batch = case["batch"]
    x = torch.randn(batch, *case["latent"], generator=g).to(device)
    labels = torch.randint(0, case.get("classes", 1), (batch,), generator=g).to(device)
    text = None
    if case["text"] is not None:
        tokens, width, pooled = case["text"]
        text = TextCondition(torch.randn(batch, tokens, width, generator=g).to(device),
                             torch.ones(batch, tokens, dtype=torch.bool).to(device),
                             torch.randn(batch, pooled, generator=g).to(device))
    return x, labels, text


def reference_step(net, case, device, bf16: bool, compiled: bool, backend: str = "inductor"):
    """A hand-written flow-matching step: logit-normal t, x_t = (1 - t) x + t eps, MSE to eps - x, bf16 autocast,
    clip to 1, fused AdamW. The diffusers model is called directly."""
    model = torch.compile(net, backend=backend) if compiled else net
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=0.0, fused=True)
    x, labels, text = inputs(case, device)

    def step():
        t = torch.sigmoid(torch.randn(x.shape[0], device=device))
        eps = torch.randn_like(x)
        x_t = (1 - t.view(-1, 1, 1, 1)) * x + t.view(-1, 1, 1, 1) * eps
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            if text is None:
                v = model(hidden_states=x_t, timestep=t * 1000, class_labels=labels, return_dict=False)[0]
            else:
                v = model(hidden_states=x_t, timestep=t * 1000, encoder_hidden_states=text.states,
                          pooled_projections=text.pooled, return_dict=False)[0]
        loss = ((v.float() - (eps - x)) ** 2).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


class FixedFeed:
    """The same precomputed batch at every step (what the objective reads from ctx.feed)."""

    def __init__(self, batch: Batch):
        self.fixed = batch

    def batch(self, step, micro):
        return self.fixed


class CachedText:
    """Stands in for the text encoder as data.cache.text does: embeddings looked up, not computed."""

    def __init__(self, text: TextCondition):
        self.text = text

    def __call__(self, captions):
        return self.text


def flowspec_step(case, device, workdir: Path, precision: str, compile_mode: str, gpu: str):
    """flowspec's stage, built as `flowspec run` builds it: the ops before `train`, then its trainer."""
    from flowspec.runtime.estimate import estimate_stage
    from flowspec.runtime.ops.train import build_trainer, context_before_train

    spec = workdir / "spec.yaml"
    spec.write_text(SPEC.format(precision=precision, compile=compile_mode, gpu=gpu, **case))
    plan = compile_spec(str(spec), sets=[f"output_dir={workdir / 'runs'}", f"data.cache.dir={workdir / 'cache'}"])
    estimate = estimate_stage(plan, plan.stages[0])
    ctx, params = context_before_train(plan, plan.stages[0], device)
    x, labels, text = inputs(case, device)
    ctx.bundle.codec = PixelCodec()  # the latents are the batch (a latent cache hit)
    if text is not None:
        ctx.bundle.text_encoder = CachedText(text)
    pixels = case["pixels"]
    ctx.feed = FixedFeed(Batch(x, [""] * len(x), labels, pixels, pixels, 0, total=len(x)))
    trainer = build_trainer(ctx, params)
    trainer.begin()
    return trainer, estimate


def timed(step, device, steps: int, warmup: int) -> tuple[float, float]:
    """(median seconds per step over `steps`, peak memory GiB) after `warmup` steps (compilation)."""
    for _ in range(warmup):
        step()
    device_sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        device_sync(device)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return statistics.median(times), peak


def step_flops(step) -> float:
    """The FLOPs of one step, counted eagerly: a compiled region would otherwise run its graph outside the
    counting mode (the arithmetic is the same either way)."""
    with torch.compiler.set_stance("force_eager"), FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def host_syncs(step, device) -> int | None:
    """Synchronisations of the host with the device inside one step (CUDA's sync debug mode warns on each)."""
    if device.type != "cuda":
        return None
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchronizing" in str(w.message) for w in seen)


def free(device):
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure(name: str, case: dict, device, args, peak: float) -> list[dict]:
    from flowspec.runtime.models.build import build_denoiser

    rows, bf16 = [], device.type == "cuda"
    with tempfile.TemporaryDirectory() as tmp:
        trainer, estimate = flowspec_step(case, device, Path(tmp), "auto", args.compile, args.gpu)
        step = trainer.advance
        flops = step_flops(trainer.train_step)
        seconds, memory = timed(step, device, args.steps, args.warmup)
        syncs = host_syncs(trainer.train_step, device)
        trainer.progress.close()
        spec_model = trainer.objective.bundle.denoiser.spec
        rows.append(row(name, f"flowspec (compile: {args.compile})", case, seconds, flops, memory, peak,
                        plan_memory_gib=round(estimate.memory_gib, 2),
                        plan_step_s=float(f"{estimate.step_seconds:.4g}"),
                        host_syncs_per_step=syncs))
        del trainer
        free(device)
        for compiled in (() if args.flowspec_only else (False, True)):
            torch.manual_seed(0)
            net = build_denoiser(spec_model, device=str(device)).train()
            step = reference_step(net, case, device, bf16, compiled, "eager" if args.tiny else "inductor")
            if not compiled:  # the same model and batch: its count is the compiled loop's too
                flops = step_flops(step)
            seconds, memory = timed(step, device, args.steps, args.warmup + (2 if compiled else 0))
            rows.append(row(name, "reference, " + ("compiled" if compiled else "eager"), case, seconds, flops, memory,
                            peak))
            del net, step
            free(device)
    references = [r for r in rows if r["loop"].startswith("reference")]
    if references:
        best = max(references, key=lambda r: r["img_per_s"])
        rows[0]["ratio_to_best_reference"] = round(rows[0]["img_per_s"] / best["img_per_s"], 3)
        print(f"{name}: flowspec / best reference {rows[0]['ratio_to_best_reference']}", flush=True)
    return rows


def row(name, loop, case, seconds, flops, memory, peak, **extra) -> dict:
    """One measured loop, printed at once (a run cut short by a time limit still shows what it measured)."""
    achieved = flops / seconds / 1e12
    result = {"model": name, "loop": loop, "batch": case["batch"], "flops_per_step": flops, "step_s": round(seconds, 4),
            "img_per_s": round(case["batch"] / seconds, 1), "tflops": round(achieved, 2),
            "mfu": round(achieved / peak, 3), "peak_memory_gib": round(memory, 2), **extra}
    print("  ".join(f"{k} {v}" for k, v in result.items()), flush=True)
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=[*MODELS, "all"], default="all")
    parser.add_argument("--tiny", action="store_true", help="tiny presets on the CPU, in seconds")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 20, --tiny 2)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 5, --tiny 1)")
    parser.add_argument("--compile", choices=["false", "regional", "full"], default="regional")
    parser.add_argument("--gpu", default="h200", help="the accelerator the plan's estimates are for")
    parser.add_argument("--json", default=None, help="write the rows here too")
    parser.add_argument("--flowspec-only", action="store_true", help="no reference loops (ablation rows)")
    args = parser.parse_args()
    args.steps = args.steps or (2 if args.tiny else 20)
    args.warmup = args.warmup or (1 if args.tiny else 5)
    if args.tiny:
        args.compile = "false" if args.compile == "regional" else args.compile
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    table = TINY if args.tiny else MODELS
    peak = matmul_peak(device, args.tiny)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {card}, torch {torch.__version__}, "
          f"matmul peak {peak:.1f} TFLOP/s")
    rows = []
    for name in (table if args.model == "all" else [args.model]):
        rows += measure(name, table[name], device, args, peak)
    if args.json:
        Path(args.json).write_text(json.dumps({"peak_tflops": peak, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
