"""`flowspec plan` estimates: exact parameter counts, FLOPs against closed forms, memory and hours."""
import dataclasses

import pytest
from torch import nn

from flowspec.compiler import compile_spec
from flowspec.runtime.estimate import ACCELERATORS, estimate_plan, forward_cost, lora_params
from flowspec.runtime.models.build import build_denoiser
from flowspec.schemas.lora import LoRA

from .test_presets import model_spec

# Published parameter counts of the models the presets are shaped after.
PUBLISHED = [("unet", "sdxl", 2_567_463_684), ("mmdit", "sd3_medium", 2_028_328_000), ("flux", "dev", 11_901_408_320)]


@pytest.mark.parametrize("family,preset,count", PUBLISHED)
def test_large_presets_have_the_published_parameter_counts(family, preset, count):
    model = build_denoiser(model_spec(family, preset), device="meta")
    assert sum(p.numel() for p in model.parameters()) == count


@pytest.mark.parametrize("family", ["dit", "mmdit", "flux", "unet", "pixart"])
def test_lora_count_matches_peft_on_a_real_model_and_the_closed_form(family):
    lora = LoRA(rank=3, targets=["to_q", "to_v"])
    counted = lora_params(build_denoiser(model_spec(family), device="meta"), lora)
    from peft import LoraConfig, inject_adapter_in_model

    real = inject_adapter_in_model(LoraConfig(r=3, lora_alpha=3, target_modules=["to_q", "to_v"]),
                                   build_denoiser(model_spec(family)))
    assert counted == sum(p.numel() for n, p in real.named_parameters() if "lora_" in n)
    closed = sum(3 * (m.in_features + m.out_features) for n, m in build_denoiser(model_spec(family)).named_modules()
                 if isinstance(m, nn.Linear) and n.split(".")[-1] in ("to_q", "to_v"))
    assert counted == closed > 0


def test_mlp_forward_flops_are_twice_the_matmul_sizes():
    spec = model_spec("mlp", "small")
    model = build_denoiser(spec, device="meta")
    expected = sum(2 * m.in_features * m.out_features for m in model.modules() if isinstance(m, nn.Linear))
    assert forward_cost(model, spec, 1, 1).flops == expected


@pytest.mark.parametrize("family", ["dit", "mmdit", "unet"])
def test_meta_measurement_equals_a_real_forward(family):
    """FLOPs and saved activations measured without memory equal those of a real CPU forward.

    The real forward uses the math attention backend: that is what runs on the meta device, and
    FlopCounterMode has no formula for the CPU flash kernel (it would count attention as 0)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    spec = model_spec(family)
    meta = forward_cost(build_denoiser(spec, device="meta"), spec, 16, 2)
    with sdpa_kernel(SDPBackend.MATH):
        real = forward_cost(build_denoiser(spec), spec, 16, 2, device="cpu")
    assert meta == real
    bigger = forward_cost(build_denoiser(spec, device="meta"), spec, 32, 2)
    assert bigger.flops > meta.flops and bigger.saved_bytes > meta.saved_bytes


def test_plan_estimates_follow_their_formulas(root):
    plan = estimate_plan(compile_spec(str(root / "specs/sdxl_like.yaml")))
    pretrain = plan.stage("pretrain").estimate
    accel = ACCELERATORS["h100"]
    assert pretrain.devices == 32 and pretrain.params_total - pretrain.params_text_encoder == 2_567_463_684
    assert pretrain.params_text_encoder > 0
    seconds = pretrain.train_flops / (accel.peak_tflops * 1e12 * plan.spec.executor.mfu)
    assert pretrain.gpu_hours == pytest.approx(seconds / 3600)
    assert pretrain.step_seconds == pytest.approx(seconds / 32 / 200_000)
    lora = plan.stage("subject_lora").estimate
    assert 0 < lora.params_trainable < lora.params_total / 50
    assert lora.memory_gib < pretrain.memory_gib


_MEASURED: dict = {}


def first_stage(spec: str, *sets: str):
    """(plan, estimate of its pretrain stage, the first after the autoencoder), the model measured once per test session (the measure does not depend
    on model.gradient_checkpointing, which the variants change)."""
    from flowspec.runtime.estimate import _Measured, estimate_stage

    plan = compile_spec(spec, None, list(sets))
    key = plan.spec.model.model_copy(update={"gradient_checkpointing": False}).model_dump_json()
    measured = _MEASURED.setdefault(key, _Measured(plan.spec.model))
    return plan, estimate_stage(plan, plan.stage("pretrain"), measured)


def test_memory_grows_with_micro_batch_and_shrinks_with_checkpointing(root):
    spec = str(root / "specs/sd3_like.yaml")
    mem = lambda *sets: first_stage(spec, *sets)[1].memory_gib
    base = mem("model.gradient_checkpointing=false")
    assert mem("model.gradient_checkpointing=false", "train.micro_batch=16") > base
    assert mem("model.gradient_checkpointing=true") < base
    notes = first_stage(spec, "model.gradient_checkpointing=false")[1].notes
    assert any("exceeds the 80 GiB of a h100" in n for n in notes)


def test_checkpoint_interval_longer_than_the_time_limit_is_noted(root):
    _, estimate = first_stage(str(root / "specs/sdxl_like.yaml"), "executor.timeout_min=30",
                              "train.checkpoint.every=100000")
    assert any("longer than the 30 min time limit" in n for n in estimate.notes)


def test_plan_text_shows_every_column(root):
    plan = estimate_plan(compile_spec(str(root / "specs/quickstart.yaml")))
    text = plan.as_text()
    for column in ("stage", "kind", "from", "steps", "params", "trainable", "train FLOPs", "mem/dev", "GPU-h", "cache"):
        assert column in text
    from flowspec.runtime.models.bundle import build_bundle

    bundle = build_bundle(plan.spec.model, seed=0)
    real = sum(p.numel() for m in bundle.trainable_modules().values() for p in m.parameters())
    assert f"{real:,}" in text
    assert dataclasses.asdict(plan.stage("pretrain").estimate)["params_total"] == real


@pytest.mark.slow  # plans the headline spec twice (about 30 s): with the slow tests
def test_a_distillation_stage_counts_its_teacher_and_dmd2_its_fake_model(tmp_path, root):
    """LCM: 2 of its 6 forwards per sample are the guided teacher's (a third of the FLOPs); DMD2 holds a trained
    fake score model, its weights, gradients and Adam state, on top of what a stage without one holds."""
    text = (root / "specs/sdxl_like.yaml").read_text()
    plan = estimate_plan(compile_spec(str(root / "specs/sdxl_like.yaml")))
    lcm = plan.stage("lcm").estimate
    note = next(n for n in lcm.notes if n.startswith("teacher:"))
    assert note.startswith("teacher: 2 of 6 forwards per sample:") and note.endswith("33% of the stage's")
    spec = tmp_path / "s.yaml"
    spec.write_text(text.replace("kind: consistency_distill", "kind: distribution_matching").replace(
        "    skip: 20\n    num_timesteps: 50\n", "    fake_updates: 1\n"))
    dmd = estimate_plan(compile_spec(str(spec))).stage("lcm").estimate
    extra = dmd.memory_gib - lcm.memory_gib
    assert extra == pytest.approx(16 * dmd.params_total * 1.1 / 2**30, rel=1e-6)
    assert any("1 trained copy of the model" in n for n in dmd.notes)


def test_sharding_shares_the_states_over_the_devices_and_plan_says_which_fits(root):
    from flowspec.runtime.estimate import GIB, Footprint, ForwardCost, _Measured, count_params, peak_memory

    plan = estimate_plan(compile_spec(str(root / "specs/sd3_like.yaml"), None, ["executor.gpu=a100_40gb"]))
    none = plan.stage("pretrain").estimate
    stage, model = plan.spec_stage("pretrain"), plan.spec.model
    assert none.devices == 64 and stage.train.sharding == "none"
    measured = _Measured(model)
    # fsdp shards each transformer block on its own; the rest (embeddings, output layers, text encoder) is the root's.
    assert measured.largest_block == count_params(measured.model.transformer_blocks[0])
    root_own = none.params_total - sum(count_params(block) for block in measured.model.transformer_blocks)
    assert measured.unblocked + measured.text_params == root_own
    # The states (weights, gradients, AdamW moments, EMA) are split 64 ways; the root's weights, one block and the
    # next stay whole, in bf16.
    total = none.params_total
    states = Footprint(total, total, ForwardCost(0.0, 0.0), 64, measured.largest_block, root_own)
    whole, shared = peak_memory(stage, states, []), peak_memory(stage, states, [], sharded=True)
    assert shared == pytest.approx(whole / 64 + 1.1 * (root_own + 2 * measured.largest_block) * 2 / GIB, rel=1e-9)
    fsdp = none.memory_gib - whole + shared  # the activations are a device's own either way
    assert (f"memory per device by train.sharding: none {none.memory_gib:.1f} GiB, fsdp {fsdp:.1f} GiB "
            "over 64 devices; fsdp fits the 40 GiB of a a100_40gb") in none.notes
    assert any("exceeds the 40 GiB" in n and "shard it (train.sharding: fsdp)" in n for n in none.notes)


def test_auto_checkpointing_picks_the_fewest_blocks_that_fit_the_declared_device(root):
    from flowspec.runtime.estimate import footprint_of, peak_memory
    from flowspec.runtime.objectives import cost_of

    spec = str(root / "specs/sd3_like.yaml")
    seen = {}
    for gpu in ("rtx4090", "h100", "h200"):
        plan, estimate = first_stage(spec, "model.gradient_checkpointing=auto", f"executor.gpu={gpu}")
        stage = plan.spec_stage("pretrain")
        measured = next(iter(_MEASURED.values()))
        footprint = footprint_of(stage, measured, estimate.params_trainable, cost_of(stage, str(root / "specs")))
        count, limit = len(footprint.activations.regions), ACCELERATORS[gpu].memory_gib
        memory = [peak_memory(stage, footprint, [], False, k) for k in range(count + 1)]
        chosen = len(estimate.checkpointed)
        assert estimate.memory_gib == pytest.approx(memory[chosen])
        assert estimate.checkpointed == tuple(measured.region_names[i]
                                              for i in footprint.activations.recomputed(chosen))
        if memory[chosen] <= limit:  # the fewest that fit
            assert all(m > limit for m in memory[:chosen])
        else:  # nothing fits: all of them, and plan says so
            assert chosen == count and any("still does not fit" in n for n in estimate.notes)
        seen[gpu] = chosen
    assert seen["rtx4090"] == 24 and 0 < seen["h100"] < 24 and seen["h200"] < seen["h100"]


@pytest.mark.parametrize("family", ["mmdit", "unet"])
def test_the_regions_checkpointed_keep_what_the_meta_measure_says_and_train_alike(family):
    """The runtime's choice of regions saves, region by region, what the estimate measured on the meta device for
    it; the gradients are those of a model without checkpointing."""
    import copy

    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from flowspec.runtime.estimate import TEXT_TOKENS, saved_by_region
    from flowspec.runtime.models.build import example_inputs
    from flowspec.runtime.models.checkpointing import enable_checkpointing
    from flowspec.runtime.train.speed import regions

    spec = model_spec(family)
    measured = forward_cost(build_denoiser(spec, device="meta"), spec, 16, 2)
    net = build_denoiser(spec)
    plain = copy.deepcopy(net)
    names = [name for name, _ in regions(net)]
    chosen = measured.recomputed(len(measured.regions) - 1)  # some, not all: the selective path
    enable_checkpointing(net, tuple(names[i] for i in chosen))
    tokens = getattr(spec.text_encoder, "max_tokens", TEXT_TOKENS.get(getattr(spec.text_encoder, "kind", None), 0))
    torch.manual_seed(0)
    inputs = {k: torch.rand_like(v) if isinstance(v, torch.Tensor) and v.is_floating_point() else v
              for k, v in example_inputs(spec, 1, 8, 8, tokens, device="cpu").items()}
    with sdpa_kernel(SDPBackend.MATH):
        saved, _ = saved_by_region(net, lambda: net(**inputs))
        assert all(saved[i] == region.saved for i, region in enumerate(measured.regions) if i not in chosen)
        assert sum(saved) == measured.saved_bytes - sum(measured.regions[i].saving() for i in chosen) < measured.saved_bytes
        grads = []
        for model in (net, plain):
            model(**inputs)[0].square().mean().backward()
            grads.append([p.grad for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*grads))


def test_a_sharded_frozen_copy_costs_a_share_of_itself_and_nothing_offloaded(root):
    from flowspec.runtime.estimate import GIB, _Measured, estimate_stage

    spec, measured = str(root / "specs/sdxl_like.yaml"), []

    def mem(*sets):
        plan = compile_spec(spec, None, ["stages.dpo.train.sharding=fsdp", *sets])
        measured.append(measured[0] if measured else _Measured(plan.spec.model))
        return estimate_stage(plan, plan.stage("dpo"), measured[0])

    sharded, offloaded = mem(), mem("stages.dpo.train.offload_frozen=true")
    # the reference's bf16 weights, split over the devices, leave the device; its gathered blocks stay
    assert sharded.memory_gib - offloaded.memory_gib == pytest.approx(
        1.1 * 2 * sharded.params_total / sharded.devices / GIB, rel=1e-9)
