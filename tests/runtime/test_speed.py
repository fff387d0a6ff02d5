"""train.compile: regional compilation finds each family's repeated blocks, compiles them in place, keeps the
loss of the eager model, and caches the compiled code under data.cache.dir for later runs."""
from pathlib import Path

import pytest
import torch

from flowspec.compiler import compile_spec
from flowspec.runtime.models.build import build_denoiser
from flowspec.runtime.ops.train import build_trainer, context_before_train
from flowspec.runtime.train.speed import COMPILE_CACHE, regions
from ..test_presets import model_spec

DIT = """\
flowspec: 1
name: speed
seed: 0
model: {kind: dit, preset: tiny, config: {in_channels: 3, out_channels: 3, sample_size: 16, patch_size: 2},
        latent: {kind: pixel}}
data:
  source: {kind: shapes, num_images: 256}
  curriculum: [{at_step: 0, resolution: 16, complexity: [1, 1]}]
  cache: {dir: CACHE}
timesteps: {sampler: {kind: logit_normal}}
optimizer: {kind: adamw, lr: 1.0e-3}
train:
  global_batch: 4
  compile: COMPILE
  samples: {prompts: ["a red circle"]}
stages:
  - {name: pretrain, kind: pretrain, steps: 4}
"""


@pytest.mark.parametrize("kind,expected", [
    ("dit", ["transformer_blocks.0", "transformer_blocks.1"]),
    ("mmdit", ["transformer_blocks.0", "transformer_blocks.1"]),
    ("flux", ["transformer_blocks.0", "single_transformer_blocks.0", "single_transformer_blocks.1"]),
    ("unet", ["down_blocks.0", "down_blocks.1", "up_blocks.0", "up_blocks.1", "mid_block"]),
    ("mlp", []),
])
def test_regions_are_each_familys_repeated_blocks(kind, expected):
    net = build_denoiser(model_spec(kind), device="meta")
    assert [name for name, _ in regions(net)] == expected


def stage_context(tmp_path: Path, compile_mode: str):
    spec = tmp_path / f"{compile_mode}.yaml"
    spec.write_text(DIT.replace("CACHE", str(tmp_path / "cache")).replace("COMPILE", compile_mode))
    plan = compile_spec(str(spec), sets=[f"output_dir={tmp_path / compile_mode}"])
    ctx, params = context_before_train(plan, plan.stages[0], torch.device("cpu"))
    return ctx, build_trainer(ctx, params)


def test_full_compiles_the_whole_denoiser_and_false_nothing(tmp_path):
    ctx, _ = stage_context(tmp_path, "full")
    net = ctx.bundle.denoiser.net
    assert net._compiled_call_impl is not None
    assert all(block._compiled_call_impl is None for _, block in regions(net))
    eager, _ = stage_context(tmp_path, "false")
    assert eager.bundle.denoiser.net._compiled_call_impl is None


@pytest.mark.slow  # inductor compiles a block's forward and backward on the CPU: about a minute cold
def test_regional_compile_keeps_the_loss_and_caches_the_code(tmp_path):
    eager_ctx, eager = stage_context(tmp_path, "false")
    ctx, compiled = stage_context(tmp_path, "regional")
    blocks = [block for _, block in regions(ctx.bundle.denoiser.net)]
    assert blocks and all(block._compiled_call_impl is not None for block in blocks)
    assert eager_ctx.bundle.denoiser.net.transformer_blocks[0]._compiled_call_impl is None
    for step in range(2):
        a, _ = eager.objective(step, 0)
        b, _ = compiled.objective(step, 0)
        assert b.item() == pytest.approx(a.item(), rel=1e-4)
        b.backward()
    grads = [p.grad for p in ctx.bundle.denoiser.net.transformer_blocks[0].parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any((tmp_path / "cache" / COMPILE_CACHE).rglob("*")), "nothing cached under data.cache.dir"
