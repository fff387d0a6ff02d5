"""Runtime operators run alone on a StageContext: what each one leaves for the next."""
import pytest
import torch

from flowspec.compiler import SpecError, compile_spec
from flowspec.runtime.ops import OPS, StageContext

from .helpers import IMAGE, TOY, write_spec


def context(tmp_path, text, *sets, stage="pretrain"):
    plan = compile_spec(str(write_spec(tmp_path, text)), None, sets)
    stage_plan = plan.stage(stage)
    return StageContext(stage=plan.spec_stage(stage), seed=stage_plan.seed, device=torch.device("cpu"), plan=plan,
                        stage_plan=stage_plan, run_dir=tmp_path / "run")


def saved_bytes(ctx) -> int:
    """Bytes autograd keeps for the backward of one training forward (what checkpointing trades for compute)."""
    from flowspec.runtime.models.conditioning import make_condition

    total = [0]

    def pack(tensor):
        total[0] += tensor.numel() * tensor.element_size()
        return tensor

    x = torch.randn(4, 3, 16, 16)
    cond = make_condition(ctx.bundle, ["a red circle"] * 4, None, (16, 16))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        ctx.bundle.denoiser.velocity(x, torch.rand(4), cond).square().mean()
    return total[0]


@pytest.mark.parametrize("family", ["mmdit", "mlp"])
def test_load_model_enables_gradient_checkpointing_when_the_spec_asks(tmp_path, family):
    text = IMAGE if family == "mmdit" else TOY
    on = context(tmp_path, text, "model.gradient_checkpointing=true")
    off = context(tmp_path, text)
    for ctx in (on, off):
        OPS["load_model"].run(ctx, {})
        ctx.bundle.train()
    assert on.bundle.denoiser.net.is_gradient_checkpointing and not off.bundle.denoiser.net.is_gradient_checkpointing
    if family == "mmdit":
        assert saved_bytes(on) < 0.7 * saved_bytes(off)  # the blocks' activations are recomputed, not kept


def test_data_op_splits_the_batch_as_the_spec_says_for_this_many_processes(tmp_path, capsys):
    ctx = context(tmp_path, TOY, "train.accumulation=4")
    OPS["load_model"].run(ctx, {})
    OPS["data"].run(ctx, {})
    assert ctx.accumulation == 4 and ctx.stream.size == 16  # global batch 64 = 16 x 1 x 4
    assert "[pretrain] batch 64 = micro-batch 16 x 1 process(es) x 4 accumulation step(s)" in capsys.readouterr().out
    from flowspec.runtime.distributed import Distributed

    bad = context(tmp_path, TOY, "train.accumulation=4", "train.global_batch=4")
    bad.dist = Distributed(world=2)
    OPS["load_model"].run(bad, {})
    with pytest.raises(SpecError) as caught:
        OPS["data"].run(bad, {})
    assert str(caught.value.issues[0]).endswith("stages.pretrain.train.accumulation: global_batch 4 does not split "
                                                "into 2 process(es) x accumulation 4 (micro-batches of 0.5 samples)")


@pytest.mark.parametrize("native", [True, False])
def test_bf16_on_a_cpu_without_native_bf16_says_it_is_slower(tmp_path, capsys, monkeypatch, native):
    from flowspec.runtime.ops import train

    monkeypatch.setattr(train, "native_bf16", lambda: native)
    ctx = context(tmp_path, TOY, "train.precision=bf16", "stages.pretrain.steps=6")
    ctx.run_dir.mkdir()
    for node in ctx.stage_plan.ops[:3]:  # load_model, data, train
        OPS[node.op].run(ctx, node.params)
    warned = "train.precision bf16 on a CPU without native bf16 (AVX512-BF16, AMX) is emulated" in capsys.readouterr().out
    assert warned is not native
