"""LoRA (algorithms.md section 4) on every family's tiny preset: exact zero init, merge = unmerged forward,
gradients only on the adapters, the alpha / r scaling, the trainable count against the estimator's and the
closed form, and the exported file loaded back with the diffusers / peft APIs.

Merge tolerance. Merged and unmerged forwards compute the same function, (W + s B A) x against
W x + s B (A x), and differ only by float32 rounding (eps = 2**-23 = 1.2e-7). One matmul with fan-in
k <= 256 rounds each output by about sqrt(k) * eps * |y| <= 2e-6 |y|; the norms keep activations O(1) and
the difference does not grow through the blocks: measured max |merged - unmerged| = 1.4e-6 on outputs of
max |v| = 3 (all six families, rank 1..8, alpha/r in 1/16..16, random A and B giving |delta W| ~ |W|).
We allow 1e-5 * max(1, max|v|) (about 80 eps of the output scale, 7x the largest measured difference),
while the adapter moves the output by about 1, so a merge that drops or misscales the update fails.
"""
from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
from peft.tuners.tuners_utils import BaseTunerLayer
from pydantic import TypeAdapter
from safetensors import safe_open

from flowspec.runtime.estimate import lora_params
from flowspec.runtime.models.build import build_denoiser
from flowspec.runtime.models.bundle import build_bundle, export_bundle, load_exported
from flowspec.runtime.models.conditioning import make_condition
from flowspec.runtime.models.lora import (COMPONENT, WEIGHT_NAME, attach_lora, export_lora, lora_state_dict,
                                          merge_lora)
from flowspec.schemas.lora import DEFAULT_TARGETS, LoRA
from flowspec.schemas.spec import Spec

MODEL = TypeAdapter(Spec.model_fields["model"].annotation)
TEXT = {"kind": "builtin", "num_layers": 1, "max_tokens": 8}
PIXEL = {"kind": "pixel"}
SPECS = {
    "dit": {"kind": "dit", "latent": PIXEL},
    "mmdit": {"kind": "mmdit", "latent": PIXEL, "text_encoder": TEXT},
    "flux": {"kind": "flux", "latent": PIXEL, "text_encoder": TEXT},
    "unet": {"kind": "unet", "latent": PIXEL, "text_encoder": TEXT},
    "pixart": {"kind": "pixart", "latent": PIXEL, "text_encoder": TEXT},
    "mlp": {"kind": "mlp", "latent": PIXEL},
}
FAMILIES = list(SPECS)
# DiT on captions owns a projection outside the backbone (and a trainable builtin encoder): both freeze.
WITH_TEXT_DIT = {**SPECS, "dit-text": {"kind": "dit", "latent": PIXEL, "conditioning": "text", "text_encoder": TEXT}}
MLP_TARGETS = ["net.0", "net.2"]  # schemas/lora_targets.py: the MLP adapts "net.#"
# The pipeline component each backbone is: the key prefix of the exported file (diffusers' convention;
# the MLP has no pipeline and is called what its export folder calls it).
PREFIX = {"dit": "transformer.", "mmdit": "transformer.", "flux": "transformer.", "pixart": "transformer.",
          "unet": "unet.", "mlp": "denoiser."}

seeds = st.integers(0, 2**31 - 1)
ranks = st.integers(1, 8)
alphas = st.floats(0.25, 64.0, allow_nan=False, allow_infinity=False)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core runner the OpenMP barriers of a
    second thread made the file 4x slower (45 s against 12 s measured); restored for the other modules."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def spec_of(name):
    return MODEL.validate_python(SPECS.get(name) or WITH_TEXT_DIT[name])


def targets_of(name, all_linear=False):
    # The MLP's output layer is 2 features wide: all-linear would refuse the ranks above 2 drawn here.
    if all_linear and name != "mlp":
        return "all-linear"
    return list(MLP_TARGETS) if name == "mlp" else list(DEFAULT_TARGETS)


def inputs(bundle, seed, batch=2):
    """Random (x_t, t, condition) of a family's velocity at 8x8 latent cells (2-D points for the MLP)."""
    g = torch.Generator().manual_seed(seed)
    spec = bundle.denoiser.spec
    shape = (batch, spec.resolved_config()["in_dim"]) if spec.kind == "mlp" else \
        (batch, spec.latent_channels_expected(), 8, 8)
    x, t = torch.randn(*shape, generator=g), torch.rand(batch, generator=g)
    labels = torch.randint(0, 16, (batch,), generator=g) if spec.kind == "dit" else None
    words = ["a", "red", "cat", "dog", "on", "the", "grass", "photo"]
    captions = [" ".join(words[i] for i in torch.randint(0, 8, (4,), generator=g).tolist()) for _ in range(batch)]
    return x, t, make_condition(bundle, captions, labels, (8, 8))


def velocity(bundle, x, t, cond):
    with torch.no_grad():
        return bundle.denoiser.velocity(x, t, cond)


def adapter_layers(net):
    return {name: m for name, m in net.named_modules() if isinstance(m, BaseTunerLayer)}


def perturb(net, seed, scaling):
    """Random A and B with s B A of the size of W (|delta W| ~ 0.5 / sqrt(fan-in))."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "lora_A" in name:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))
            elif "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5 / (scaling * math.sqrt(p.shape[1])))


def attached(name, seed, **lora):
    bundle = build_bundle(spec_of(name), seed).eval()
    block = LoRA(**lora)
    return bundle, block, attach_lora(bundle, block)


# ------------------------------------------------------------------------------------------ init
@pytest.mark.parametrize("init", ["default", "gaussian"])
@pytest.mark.parametrize("family", FAMILIES)
@settings(max_examples=3)
@given(rank=ranks, alpha=alphas, all_linear=st.booleans(), seed=seeds)
def test_zero_init_adapter_leaves_the_velocity_unchanged_exactly(family, init, rank, alpha, all_linear, seed):
    bundle = build_bundle(spec_of(family), seed % 1000).eval()
    x, t, cond = inputs(bundle, seed)
    base = velocity(bundle, x, t, cond)
    attach_lora(bundle, LoRA(rank=rank, alpha=alpha, init=init, targets=targets_of(family, all_linear)))
    layers = adapter_layers(bundle.denoiser.net)
    assert layers and all(torch.count_nonzero(m.lora_B["default"].weight) == 0 for m in layers.values())
    a_weights = [m.lora_A["default"].weight for m in layers.values()]
    assert all(torch.count_nonzero(a) > 0 for a in a_weights)  # A is random
    # "default": Kaiming-uniform with a = sqrt(5), i.e. U(-1/sqrt(in), 1/sqrt(in)); "gaussian": N(0, 1/r^2),
    # which exceeds that bound somewhere, with a pooled std of 1/r (5 standard errors of a std estimate allowed).
    beyond = [a.abs().max().item() * math.sqrt(a.shape[1]) > 1 for a in a_weights]
    if init == "default":
        assert not any(beyond)
    else:
        pooled = torch.cat([a.flatten() for a in a_weights])
        assert any(beyond) and abs(pooled.std().item() * rank - 1) < 5 / math.sqrt(2 * pooled.numel())
    # B = 0 adds exact zeros: the same bits, not merely close.
    assert torch.equal(velocity(bundle, x, t, cond), base)


# ----------------------------------------------------------------------------------------- merge
@pytest.mark.parametrize("family", FAMILIES)
@settings(max_examples=3)
@given(rank=ranks, alpha=st.floats(0.5, 16.0), seed=seeds)
def test_merged_and_unmerged_forwards_agree_and_merge_leaves_a_plain_model(family, rank, alpha, seed):
    bundle = build_bundle(spec_of(family), seed % 1000).eval()
    original_keys = list(bundle.denoiser.net.state_dict())
    original_types = [type(m) for m in bundle.denoiser.net.modules()]
    x, t, cond = inputs(bundle, seed)
    base = velocity(bundle, x, t, cond)
    attach_lora(bundle, LoRA(rank=rank, alpha=alpha, targets=targets_of(family, all_linear=True)))
    perturb(bundle.denoiser.net, seed, alpha / rank)
    unmerged = velocity(bundle, x, t, cond)
    merge_lora(bundle)
    merged = velocity(bundle, x, t, cond)
    tol = 1e-5 * max(1.0, unmerged.abs().max().item())
    assert (unmerged - base).abs().max().item() > 100 * tol  # the adapter matters, so merge is tested
    torch.testing.assert_close(merged, unmerged, rtol=0, atol=tol)
    net = bundle.denoiser.net
    assert list(net.state_dict()) == original_keys
    assert [type(m) for m in net.modules()] == original_types and not adapter_layers(net)
    assert not hasattr(net, "peft_config")


# ------------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("family", list(WITH_TEXT_DIT))
def test_only_adapter_parameters_receive_gradients(family):
    bundle, _, _ = attached(family, 0, rank=4, targets=targets_of(family))
    bundle.train()
    # The condition is encoded with autograd on, so the (frozen) text encoder is part of the graph.
    x0, t, cond = inputs(bundle, 1)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(2))
    t_ = t.view(-1, *[1] * (x0.dim() - 1))
    x_t = (1 - t_) * x0 + t_ * eps
    loss = ((bundle.denoiser.velocity(x_t, t, cond) - (eps - x0)) ** 2).mean()  # flow-matching MSE, v = eps - x0
    loss.backward()
    modules = {"denoiser": bundle.denoiser, "text_encoder": bundle.text_encoder}
    named = [(f"{k}.{n}", p) for k, m in modules.items() if m is not None for n, p in m.named_parameters()]
    frozen = {n: p for n, p in named if "lora_" not in n}
    assert frozen and all(p.grad is None and not p.requires_grad for p in frozen.values()), \
        [n for n, p in frozen.items() if p.grad is not None or p.requires_grad][:5]
    adapters = {n: p for n, p in named if "lora_" in n}
    assert adapters and all(p.requires_grad and p.grad is not None for p in adapters.values())
    # dL/dB = s (dL/dy) (A x)^T is nonzero; dL/dA = s B^T (dL/dy) x^T is exactly zero while B = 0 (init).
    assert all(torch.count_nonzero(p.grad) > 0 for n, p in adapters.items() if "lora_B" in n), \
        [n for n, p in adapters.items() if "lora_B" in n and torch.count_nonzero(p.grad) == 0]
    assert all(torch.count_nonzero(p.grad) == 0 for n, p in adapters.items() if "lora_A" in n)


# --------------------------------------------------------------------------------------- scaling
def first_adapted_linear(bundle):
    return next(m for m in adapter_layers(bundle.denoiser.net).values() if isinstance(m.get_base_layer(), torch.nn.Linear))


@pytest.mark.parametrize("family", FAMILIES)
@settings(max_examples=4)
@given(rank=ranks, alpha=alphas, seed=seeds)
def test_doubling_alpha_doubles_the_adapter_contribution(family, rank, alpha, seed):
    """With the base weight and bias zeroed the layer output is exactly the adapter branch s B A x, so
    doubling alpha (s = alpha / r, doubled exactly) must double it bit for bit."""
    g = torch.Generator().manual_seed(seed)
    layers = []
    for a in (alpha, 2 * alpha):
        bundle, _, _ = attached(family, 0, rank=rank, alpha=a, targets=targets_of(family))
        layers.append(first_adapted_linear(bundle))
    A = torch.randn(layers[0].lora_A["default"].weight.shape, generator=g)
    B = torch.randn(layers[0].lora_B["default"].weight.shape, generator=g)
    x = torch.randn(3, A.shape[1], generator=g)
    outs = []
    with torch.no_grad():
        for layer in layers:
            layer.lora_A["default"].weight.copy_(A)
            layer.lora_B["default"].weight.copy_(B)
            base = layer.get_base_layer()
            base.weight.zero_()
            if base.bias is not None:
                base.bias.zero_()
            outs.append(layer(x) - base(x))
    assert torch.equal(outs[1], 2 * outs[0])
    # and it is (alpha / r) B A x, not alpha B A x or (alpha / sqrt r) B A x
    torch.testing.assert_close(outs[0], (alpha / rank) * (x @ A.T @ B.T), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
@settings(max_examples=4)
@given(rank=ranks, alpha=alphas, factor=st.integers(2, 4), seed=seeds)
def test_same_alpha_over_r_gives_the_same_forward(family, rank, alpha, factor, seed):
    """Rank r -> factor*r and alpha -> factor*alpha with the same A, B (zero-padded to the larger rank, so
    B' A' = B A): the output is unchanged. Small integer A, B, x make every product and partial sum exact
    in float32, so the padded matmuls give the same bits whatever order they add in."""
    g = torch.Generator().manual_seed(seed)
    small, _, _ = attached(family, 0, rank=rank, alpha=alpha, targets=targets_of(family))
    large, _, _ = attached(family, 0, rank=factor * rank, alpha=factor * alpha, targets=targets_of(family))
    layer_r, layer_big = first_adapted_linear(small), first_adapted_linear(large)
    A = torch.randint(-3, 4, layer_r.lora_A["default"].weight.shape, generator=g).float()
    B = torch.randint(-3, 4, layer_r.lora_B["default"].weight.shape, generator=g).float()
    x = torch.randint(-3, 4, (3, A.shape[1]), generator=g).float()
    with torch.no_grad():
        layer_r.lora_A["default"].weight.copy_(A)
        layer_r.lora_B["default"].weight.copy_(B)
        layer_big.lora_A["default"].weight.zero_()[:rank].copy_(A)
        layer_big.lora_B["default"].weight.zero_()[:, :rank].copy_(B)
        out_r, out_big = layer_r(x), layer_big(x)
        assert not torch.equal(out_r, layer_r.get_base_layer()(x))  # the adapter contributes
    assert torch.equal(out_r, out_big)


# ---------------------------------------------------------------------------------------- counts
def linear_leaves(net):
    """Suffix targets that match only Linear layers of the model (conv LoRA has another closed form)."""
    modules = dict(net.named_modules())
    leaves = set()
    for name, module in modules.items():
        if isinstance(module, torch.nn.Linear):
            parts = name.split(".")
            leaves.add(".".join(parts[-2:]) if parts[-1].isdigit() else parts[-1])
    return sorted(leaf for leaf in leaves if all(isinstance(m, torch.nn.Linear) for n, m in modules.items()
                                                 if n == leaf or n.endswith("." + leaf)))


def targeted(net, targets):
    """The Linear layers a `targets` value adapts (peft's suffix match)."""
    return [module for name, module in net.named_modules() if isinstance(module, torch.nn.Linear) and
            (targets == "all-linear" or any(name == t or name.endswith("." + t) for t in targets))]


def closed_form(net, rank, targets):
    return sum(rank * (m.in_features + m.out_features) for m in targeted(net, targets))


@pytest.mark.parametrize("family", list(WITH_TEXT_DIT))
@settings(max_examples=4)
@given(rank=ranks, alpha=alphas, data=st.data())
def test_trainable_count_equals_the_estimate_and_the_closed_form(family, rank, alpha, data):
    spec = spec_of(family)
    fresh = build_denoiser(spec)
    choice = data.draw(st.one_of(st.just("all-linear"), st.lists(st.sampled_from(linear_leaves(fresh)),
                                                                 min_size=1, max_size=4, unique=True)))
    block = LoRA(rank=rank, alpha=alpha, targets=choice)
    bundle = build_bundle(spec, 0)
    if min(min(m.in_features, m.out_features) for m in targeted(fresh, choice)) < rank:
        with pytest.raises(ValueError, match=f"rank {rank} exceeds the width of"):  # refused iff some layer is narrower
            attach_lora(bundle, block)
        return
    count = attach_lora(bundle, block)
    assert count == lora_params(build_denoiser(spec, device="meta"), block) == closed_form(fresh, rank, choice) > 0
    trainable = sum(p.numel() for m in bundle.trainable_modules().values() for p in m.parameters() if p.requires_grad)
    assert trainable == count


# ---------------------------------------------------------------------------------------- export
def _pipeline(family):
    from diffusers import FluxPipeline, StableDiffusion3Pipeline, StableDiffusionXLPipeline

    return {"mmdit": StableDiffusion3Pipeline, "flux": FluxPipeline, "unet": StableDiffusionXLPipeline}.get(family)


def _load_back(family, folder, seed):
    """A fresh bundle (same base weights) with the exported adapter loaded by the public APIs."""
    fresh = build_bundle(spec_of(family), seed).eval()
    net = fresh.denoiser.net
    if _pipeline(family) is not None:
        net.load_lora_adapter(str(folder), weight_name=WEIGHT_NAME, prefix=PREFIX[family][:-1])
    else:
        prefix = PREFIX[family]
        with safe_open(str(folder / WEIGHT_NAME), "pt") as f:
            state = {k.removeprefix(prefix): f.get_tensor(k) for k in f.keys()}
        inject_adapter_in_model(LoraConfig.from_pretrained(str(folder)), net)
        result = set_peft_model_state_dict(net, state)
        assert not result.unexpected_keys
    return fresh


@pytest.mark.parametrize("family", FAMILIES)
def test_export_loads_back_with_the_diffusers_and_peft_apis(family, tmp_path):
    seed, rank, alpha = 3, 3, 7.0  # alpha != r: a loader that drops the metadata resets alpha and fails
    bundle, block, _ = attached(family, seed, rank=rank, alpha=alpha, targets=targets_of(family))
    perturb(bundle.denoiser.net, seed, alpha / rank)
    x, t, cond = inputs(bundle, seed)
    expected = velocity(bundle, x, t, cond)
    path = export_lora(bundle, block, tmp_path)
    folder = tmp_path / "lora"
    assert path == folder / WEIGHT_NAME
    own = lora_state_dict(bundle)
    with safe_open(str(path), "pt") as f:
        saved = {k: f.get_tensor(k) for k in f.keys()}
        meta = json.loads(f.metadata()["lora_adapter_metadata"])
    prefix = PREFIX[family]
    assert COMPONENT[family] + "." == prefix
    # peft / diffusers naming: '<component>.<module>.lora_A.weight', no adapter name inside
    assert all(k.startswith(prefix) and k.endswith((".lora_A.weight", ".lora_B.weight")) for k in saved)
    assert set(saved) == {prefix + k for k in own} and all(torch.equal(saved[prefix + k], v) for k, v in own.items())
    assert (meta[prefix + "r"], meta[prefix + "lora_alpha"]) == (rank, alpha)
    config = json.loads((folder / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["peft_type"]) == (rank, alpha, "LORA")

    pipeline = _pipeline(family)
    if pipeline is not None:
        out = pipeline.lora_state_dict(str(folder), weight_name=WEIGHT_NAME, return_lora_metadata=True)
        state, metadata = out[0], out[-1]
        assert set(state) == set(saved) and all(torch.equal(state[k], saved[k]) for k in saved)
        assert metadata[prefix + "lora_alpha"] == alpha
    loaded = _load_back(family, folder, seed)
    assert torch.equal(velocity(loaded, x, t, cond), expected)

    # merge_on_export: the merged backbone exports as a plain model and reloads with the adapted forward.
    merge_lora(bundle)
    export_bundle(bundle, tmp_path / "merged")
    plain = build_bundle(spec_of(family), seed + 1).eval()
    load_exported(plain, tmp_path / "merged")
    merged = velocity(plain, x, t, cond)
    torch.testing.assert_close(merged, expected, rtol=0, atol=1e-5 * max(1.0, expected.abs().max().item()))


@pytest.mark.parametrize("family", list(WITH_TEXT_DIT))
def test_the_comfyui_file_converts_back_to_the_same_tensors(family, tmp_path):
    """`lora.format: [diffusers, comfyui]` writes both; kohya names read back through the model's module paths
    give every adapter tensor and alpha exactly; for the UNet, diffusers' own kohya converter agrees."""
    from safetensors.torch import load_file

    from flowspec.runtime.models.lora import COMFY_NAME, from_comfyui

    seed, rank, alpha = 5, 2, 3.0
    bundle, _, _ = attached(family, seed, rank=rank, alpha=alpha, targets=targets_of(family))
    perturb(bundle.denoiser.net, seed, alpha / rank)
    block = LoRA(rank=rank, alpha=alpha, targets=targets_of(family), format=["diffusers", "comfyui"])
    export_lora(bundle, block, tmp_path)
    comfy = load_file(str(tmp_path / "lora" / COMFY_NAME))
    prefix = {"unet": "lora_unet_", "mlp": "lora_denoiser_"}.get(family, "lora_transformer_")
    assert all(k.startswith(prefix) and k.endswith((".lora_down.weight", ".lora_up.weight", ".alpha")) for k in comfy)
    own = lora_state_dict(bundle)
    fresh = build_bundle(spec_of(family), seed).denoiser.net  # module paths of the plain model
    back, back_alpha = from_comfyui(comfy, fresh, family)
    assert back_alpha == alpha and set(back) == set(own) and all(torch.equal(back[k], own[k]) for k in own)
    if family == "unet":
        pipeline = _pipeline(family)
        converted, alphas = pipeline.lora_state_dict(str(tmp_path / "lora"), weight_name=COMFY_NAME)[:2]
        diffusers_file = load_file(str(tmp_path / "lora" / WEIGHT_NAME))
        # diffusers reads kohya files into its attention-processor naming: map that back to peft's
        renamed = {_from_processor_naming(k): v for k, v in converted.items()}
        assert set(renamed) == set(diffusers_file)
        assert all(torch.equal(renamed[k], diffusers_file[k]) for k in renamed)
        assert set(alphas.values()) == {alpha}


def _from_processor_naming(key: str) -> str:
    """`x.attn1.processor.to_out_lora.up.weight` -> `x.attn1.to_out.0.lora_B.weight`."""
    import re

    match = re.fullmatch(r"(.*)\.processor\.(to_[a-z]+)_lora\.(down|up)\.weight", key)
    assert match, key
    module = match[2] + (".0" if match[2] == "to_out" else "")
    return f"{match[1]}.{module}.lora_{'A' if match[3] == 'down' else 'B'}.weight"
