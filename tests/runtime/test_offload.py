"""train.offload_frozen: frozen modules in CPU memory, on the compute device only while they run."""
import pytest
import torch
from torch import nn

from flowspec.compiler import compile_spec
from flowspec.runtime.models.bundle import build_bundle, export_bundle
from flowspec.runtime.models.offload import CPUOffload, offload_calls
from flowspec.runtime.ops.train import build_trainer, context_before_train

from .helpers import write_spec


class Probe(nn.Linear):
    """Records where its weight is when its forward runs."""

    def forward(self, x):
        self.seen = self.weight.device
        return super().forward(x)


def test_an_offloaded_module_is_on_the_device_only_while_it_runs():
    # The meta device stands in for an accelerator: weights copied there lose their values, so only the CPU
    # tensors kept aside can bring them back.
    probe = Probe(4, 3)
    before = [t.clone() for t in (probe.weight, probe.bias)]
    offload = offload_calls(probe, torch.device("meta"))
    out = probe(torch.zeros(2, 4, device="meta"))
    assert probe.seen == torch.device("meta") and out.device == torch.device("meta")
    assert probe.weight.device == torch.device("cpu")
    assert torch.equal(probe.weight, before[0]) and torch.equal(probe.bias, before[1])
    with offload:  # re-entrant: a call inside an open context copies nothing and leaves the weights there
        probe(torch.zeros(1, 4, device="meta"))
        assert probe.weight.device == torch.device("meta")
    assert probe.weight.device == torch.device("cpu") and offload.loads == 2


SPEC = """\
flowspec: 1
name: off
seed: 2
model:
  kind: mmdit
  preset: tiny
  config: {sample_size: 8, patch_size: 2, num_layers: 1, joint_attention_dim: 384, pooled_projection_dim: 384}
  latent: {kind: vae, preset: tiny}
  text_encoder: {kind: minilm, max_tokens: 8}
data:
  source: {kind: shapes, num_images: 16}
  curriculum: [{at_step: 0, resolution: 16}]
train: {global_batch: 2, log_every: 1, samples: {every: 100, num_steps: 2, per_prompt: 1, prompts: ["a red circle"]}}
stages:
  - {name: distill, kind: progressive_distill, from: TEACHER, steps: 4, teacher_steps: 4, rounds: 1}
"""


def distill_trainer(tmp_path, offload: bool):
    teacher = tmp_path / "teacher"
    spec = write_spec(tmp_path, SPEC.replace("TEACHER", str(teacher)))
    plan = compile_spec(str(spec), sets=[f"output_dir={tmp_path / str(offload)}",
                                         f"stages.distill.train.offload_frozen={str(offload).lower()}"])
    if not teacher.exists():
        export_bundle(build_bundle(plan.spec.model, seed=7), teacher)
    ctx, params = context_before_train(plan, plan.stages[0], torch.device("cpu"))
    return ctx, build_trainer(ctx, params)


def test_offload_frozen_moves_the_encoders_and_the_teacher_and_changes_no_loss(tmp_path):
    losses, contexts = {}, {}
    for offload in (False, True):
        contexts[offload], trainer = distill_trainer(tmp_path, offload)
        losses[offload] = [trainer.objective(step, 0)[0] for step in range(2)]
    ctx = contexts[True]
    # the frozen copy shares the start's text encoder and VAE: each is offloaded once, with its own calls
    parts = {"text encoder": ctx.bundle.text_encoder, "VAE": ctx.bundle.codec.vae, "teacher": ctx.teacher.denoiser}
    assert ctx.teacher.text_encoder is ctx.bundle.text_encoder
    for name, module in parts.items():
        assert isinstance(getattr(module, "offload", None), CPUOffload), name
        assert module.offload.device == ctx.device and module.offload.loads > 0, name
    assert "offload" not in vars(ctx.bundle.denoiser)  # the trained model stays where it is
    assert all(torch.equal(a, b) for a, b in zip(losses[False], losses[True]))
    assert "offload" not in vars(contexts[False].bundle.codec.vae)


@pytest.mark.parametrize("sharded", [False, True])
def test_a_teacher_loaded_from_elsewhere_has_its_own_encoders_offloaded(tmp_path, sharded):
    """A teacher from another folder is built with its own VAE and text encoder: they are offloaded too; its
    denoiser is offloaded whole only when not sharded (fsdp keeps its shards in CPU memory instead)."""
    from flowspec.runtime.ops.train import offload_frozen

    other = tmp_path / "other"
    spec = write_spec(tmp_path, SPEC.replace("TEACHER", str(tmp_path / "teacher")).replace(
        "teacher_steps: 4,", f"teacher_steps: 4, teacher: {other},"))
    plan = compile_spec(str(spec), sets=[f"output_dir={tmp_path / 'runs'}"])
    for folder in (tmp_path / "teacher", other):
        export_bundle(build_bundle(plan.spec.model, seed=7), folder)
    ctx, _ = context_before_train(plan, plan.stages[0], torch.device("cpu"))
    assert ctx.teacher.codec is not ctx.bundle.codec
    offload_frozen(ctx, sharded=sharded)
    for module in (ctx.bundle.codec.vae, ctx.teacher.codec.vae, ctx.bundle.text_encoder, ctx.teacher.text_encoder):
        assert isinstance(vars(module).get("offload"), CPUOffload)
    assert ("offload" in vars(ctx.teacher.denoiser)) is not sharded


@pytest.mark.parametrize("sharded", [False, True])
def test_the_plan_counts_the_largest_offloaded_module_once(root, sharded):
    """sdxl_like's DPO stage holds a VAE and a reference copy: offloaded, only the larger is on the device (one
    at a time); a sharded reference keeps only its gathered blocks there."""
    from flowspec.runtime.estimate import GIB, _Measured, estimate_stage

    measured = []

    def estimate(*sets):
        plan = compile_spec(str(root / "specs/sdxl_like.yaml"), None,
                            [f"stages.dpo.train.sharding={'fsdp' if sharded else 'none'}", *sets])
        measured.append(measured[0] if measured else _Measured(plan.spec.model))
        return estimate_stage(plan, plan.stage("dpo"), measured[0]), measured[0]

    (kept, m), (offloaded, _) = estimate(), estimate("stages.dpo.train.offload_frozen=true")
    vae, copy = 4 * m.encoders["VAE"], 2 * kept.params_total  # fp32 VAE, bf16 reference
    # sharded: the reference's shards leave (the VAE, the only encoder, is on the device while it runs either
    # way); unsharded: the reference, the larger, is counted, the VAE no longer
    saved = copy / kept.devices if sharded else vae
    assert kept.memory_gib - offloaded.memory_gib == pytest.approx(1.1 * saved / GIB, rel=1e-9)
    assert any("frozen VAE: " in n and "(in CPU memory: train.offload_frozen)" in n for n in offloaded.notes)
