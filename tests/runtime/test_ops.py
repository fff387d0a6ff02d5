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
    return sum(saved_by_region(ctx))


def saved_by_region(ctx) -> list[float]:
    """saved_bytes in each of the denoiser's regions, then outside them."""
    from flowspec.runtime.estimate import saved_by_region
    from flowspec.runtime.models.conditioning import make_condition

    x = torch.randn(4, 3, 16, 16)
    cond = make_condition(ctx.bundle, ["a red circle"] * 4, None, (16, 16))
    return saved_by_region(ctx.bundle.denoiser.net, lambda: ctx.bundle.denoiser.velocity(x, torch.rand(4), cond))[0]


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


def test_load_model_checkpoints_the_blocks_the_plan_chose_under_auto(tmp_path, monkeypatch, capsys):
    """`auto` at run time: the regions of the plan's estimate for this stage, on its declared device (here one
    whose memory lies between the estimates with one and with two blocks checkpointed)."""
    from flowspec.runtime.estimate import ACCELERATORS, _Measured, footprint_of, peak_memory
    from flowspec.runtime.objectives import cost_of
    from flowspec.schemas.hardware import Accelerator

    sets = ("model.gradient_checkpointing=auto", "model.config.num_layers=3")
    ctx = context(tmp_path, IMAGE, *sets)
    measured = _Measured(ctx.spec.model)
    footprint = footprint_of(ctx.stage, measured, measured.total + measured.text_params, cost_of(ctx.stage, "."))
    one, two = (peak_memory(ctx.stage, footprint, [], False, k) for k in (1, 2))
    assert two < one
    monkeypatch.setitem(ACCELERATORS, "cpu", Accelerator(peak_tflops=0.2, memory_gib=(one + two) / 2))
    OPS["load_model"].run(ctx, {})
    ctx.bundle.train()
    assert "[pretrain] gradient checkpointing auto: 2 of 3 blocks recompute their activations" in capsys.readouterr().out
    chosen = footprint.activations.recomputed(2)
    off = context(tmp_path, IMAGE, "model.config.num_layers=3")
    OPS["load_model"].run(off, {})
    off.bundle.train()
    # The two chosen blocks keep less for the backward than without checkpointing, the third as much.
    auto, plain = saved_by_region(ctx), saved_by_region(off)
    assert [auto[i] < plain[i] for i in range(3)] == [i in chosen for i in range(3)]
