"""REPA: the loss invariants of algorithms.md section 3, grid matching, the block tap on every transformer
family, gradients (frozen encoder, trainable projector and denoiser) and one training step end to end."""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter

from flowspec.runtime.models.bundle import build_bundle
from flowspec.runtime.models.conditioning import make_condition
from flowspec.runtime.models.repa import BlockTap, Projector, RepaLoss, match_grid, repa_loss, student_grid
from flowspec.runtime.models.vision import EfficientNetLite0
from flowspec.schemas.spec import Spec
from flowspec.schemas.stages import Repa

MODEL = TypeAdapter(Spec.model_fields["model"].annotation)
PIXEL_MMDIT = {"kind": "mmdit", "config": {"in_channels": 3, "out_channels": 3, "patch_size": 4, "num_layers": 2},
               "latent": {"kind": "pixel"}, "text_encoder": {"kind": "builtin", "num_layers": 1, "max_tokens": 8}}

shapes = st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(2, 8))
seeds = st.integers(0, 2**31 - 1)
scales = st.floats(1e-3, 1e3)


def randn(seed, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------ the loss
@given(shapes, seeds, scales)
def test_loss_lies_in_minus_one_one(shape, seed, scale):
    value = repa_loss(randn(seed, *shape) * scale, randn(seed + 1, *shape))
    assert -1.0 <= value.item() <= 1.0


@given(shapes, seeds, st.lists(scales, min_size=18, max_size=18))
def test_positive_multiples_of_the_targets_give_minus_one(shape, seed, factors):
    target = randn(seed, *shape)
    batch, tokens, _ = shape
    per_token = torch.tensor(factors)[: batch * tokens].view(batch, tokens, 1)
    assert repa_loss(target * per_token, target).item() == pytest.approx(-1.0, abs=1e-5)


@given(shapes, seeds, st.floats(0.5, 10.0), st.booleans())
def test_one_token_off_its_target_lifts_the_loss_above_minus_one(shape, seed, off, flip):
    target = randn(seed, *shape)
    projected = target.clone()
    y = target[0, 0]
    u = randn(seed + 1, shape[2])
    u = u - (u @ y) / (y @ y) * y  # orthogonal to the target token
    u = u / u.norm() * y.norm()
    # Either tilted by atan(off) >= 26 degrees, or pointing the opposite way (a negative multiple).
    projected[0, 0] = -y if flip else y + off * u
    cos = -1.0 if flip else 1.0 / (1.0 + off**2) ** 0.5
    expected = -1.0 + (1.0 - cos) / (shape[0] * shape[1])
    value = repa_loss(projected, target).item()
    assert value > -1.0 + 1e-3 and value == pytest.approx(expected, abs=1e-4)


@given(shapes, seeds, scales, scales)
def test_invariant_to_positive_rescaling_of_either_side(shape, seed, a, b):
    projected, target = randn(seed, *shape), randn(seed + 1, *shape)
    base = repa_loss(projected, target).item()
    assert repa_loss(a * projected, target).item() == pytest.approx(base, abs=1e-5)
    assert repa_loss(projected, b * target).item() == pytest.approx(base, abs=1e-5)


@pytest.mark.parametrize("other", [(2, 5, 8), (2, 4, 7), (1, 4, 8), (2, 1, 8)])
def test_shape_mismatch_raises_instead_of_broadcasting(other):
    with pytest.raises(ValueError, match="equal shape"):
        repa_loss(torch.randn(2, 4, 8), torch.randn(*other))
    with pytest.raises(ValueError):
        repa_loss(torch.randn(4, 8), torch.randn(4, 8))


def test_projector_is_a_per_token_three_layer_mlp():
    projector = Projector(16, 32, 8)
    linears = [m for m in projector.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(16, 32), (32, 32), (32, 8)]
    tokens = torch.randn(2, 5, 16)
    out = projector(tokens)
    assert out.shape == (2, 5, 8)
    assert torch.allclose(out[1, 3], projector(tokens[1, 3]), atol=1e-6)  # no mixing across tokens


# ------------------------------------------------------------------------------- grid matching
def test_match_grid_is_the_identity_on_equal_grids():
    features = torch.randn(2, 6, 4)
    assert match_grid(features, (2, 3), (2, 3)) is features


def test_match_grid_interpolates_bilinearly():
    # 1x2 -> 1x4 with half-pixel centres: samples at x = -0.25, 0.25, 0.75, 1.25 (edges clamp).
    row = torch.tensor([0.0, 4.0]).view(1, 2, 1)
    assert torch.allclose(match_grid(row, (1, 2), (1, 4)).flatten(), torch.tensor([0.0, 1.0, 3.0, 4.0]))
    # 2x2 -> 1x1 samples the centre: the mean of the four, per channel.
    square = torch.arange(8.0).view(1, 4, 2)
    assert torch.allclose(match_grid(square, (2, 2), (1, 1)), square.mean(1, keepdim=True))
    with pytest.raises(ValueError, match="grid"):
        match_grid(torch.randn(1, 5, 2), (2, 3), (2, 3))


# ---------------------------------------------------------------------------------- block tap
TAP_FAMILIES = {"dit": (8, 8), "pixart": (8, 12), "mmdit": (8, 12), "flux": (8, 12)}


def _forward(bundle, height, width, batch=2):
    spec = bundle.denoiser.spec
    x = torch.randn(batch, spec.latent_channels_expected(), height, width)
    labels = torch.tensor([0, 3])[:batch] if spec.kind == "dit" else None
    cond = make_condition(bundle, ["a red circle", "two blue squares"][:batch], labels, (2 * height, 2 * width))
    return bundle.denoiser.velocity(x, torch.rand(batch), cond)


def _consumed_image_tokens(net, family):
    """Hooks recording the image tokens each stage after a block receives: the next block, then norm_out."""
    stages = list(net.transformer_blocks) + (list(net.single_transformer_blocks) if family == "flux" else [])
    seen = []

    def record(module, args, kwargs):
        seen.append(kwargs["hidden_states"] if "hidden_states" in kwargs else args[0])

    handles = [m.register_forward_pre_hook(record, with_kwargs=True) for m in stages[1:] + [net.norm_out]]
    return seen, handles, len(stages)


@pytest.mark.parametrize("family", TAP_FAMILIES)
def test_tap_keeps_the_image_tokens_of_exactly_the_depth_th_block(family):
    bundle = build_bundle(MODEL.validate_python({"kind": family}), seed=0)
    net, (height, width) = bundle.denoiser.net, TAP_FAMILIES[family]
    seen, handles, depth = _consumed_image_tokens(net, family)
    taps = [BlockTap(bundle.denoiser, d) for d in range(1, depth + 1)]
    _forward(bundle, height, width)
    gh, gw = student_grid(family, bundle.denoiser.config, height, width)
    tokens = gh * gw
    assert tokens == (height // 2) * (width // 2)  # patch 2, or Flux's 2x2 packing
    width_model = bundle.denoiser.config["num_attention_heads"] * bundle.denoiser.config["attention_head_dim"]
    assert len(seen) == depth
    for d, tap in enumerate(taps, start=1):
        assert tap.features.shape == (2, tokens, width_model)
        assert torch.equal(tap.features, seen[d - 1])  # what the next stage consumed as image tokens
        if d < depth:
            assert not torch.equal(tap.features, seen[d])
    for handle in handles:
        handle.remove()


def test_flux_counts_double_blocks_then_single_blocks():
    bundle = build_bundle(MODEL.validate_python({"kind": "flux"}), seed=0)
    net = bundle.denoiser.net
    assert len(net.transformer_blocks) == 1 and len(net.single_transformer_blocks) == 2
    calls = []
    net.single_transformer_blocks[1].register_forward_hook(lambda m, a, out: calls.append(out[1]))
    tap = BlockTap(bundle.denoiser, 3)
    _forward(bundle, 8, 12)
    assert len(calls) == 1 and torch.equal(tap.features, calls[0])


@pytest.mark.parametrize("kind", ["unet", "mlp"])
def test_families_without_transformer_blocks_are_refused(kind):
    bundle = build_bundle(MODEL.validate_python({"kind": kind}), seed=0)
    with pytest.raises(ValueError, match="transformer blocks"):
        BlockTap(bundle.denoiser, 1)
    with pytest.raises(ValueError, match="transformer blocks"):
        student_grid(kind, bundle.denoiser.config, 8, 8)


@pytest.mark.parametrize("depth", [0, 3])
def test_depth_outside_the_model_is_refused(depth):
    bundle = build_bundle(MODEL.validate_python({"kind": "mmdit"}), seed=0)  # 2 blocks
    with pytest.raises(ValueError, match="depth"):
        BlockTap(bundle.denoiser, depth)


def test_tap_lifecycle_and_gradient_checkpointing():
    bundle = build_bundle(MODEL.validate_python({"kind": "mmdit"}), seed=0)
    bundle.denoiser.net.enable_gradient_checkpointing()
    tap = BlockTap(bundle.denoiser, 1)
    with pytest.raises(RuntimeError, match="velocity"):
        tap.features
    out = _forward(bundle, 8, 8)
    kept = tap.features
    assert kept.requires_grad
    (out.square().mean() + kept.sum()).backward()  # the backward re-runs block 1 (recomputation)
    assert tap.features is kept
    tap.clear()
    with pytest.raises(RuntimeError):
        tap.features
    tap.remove()
    _forward(bundle, 8, 8)
    with pytest.raises(RuntimeError):
        tap.features


# ----------------------------------------------------------------------------------- RepaLoss
@pytest.fixture(scope="module")
def encoder():
    return EfficientNetLite0()


def _repa_setup(encoder, lambda_=0.5, depth=1, seed=0):
    bundle = build_bundle(MODEL.validate_python(PIXEL_MMDIT), seed=seed)
    block = Repa.model_validate({"depth": depth, "lambda": lambda_, "projector_dim": 32})
    width = bundle.denoiser.config["num_attention_heads"] * bundle.denoiser.config["attention_head_dim"]
    return bundle, RepaLoss(block, bundle.denoiser, width, encoder=encoder)


def _batch(bundle, seed=0, batch=4, size=16):
    g = torch.Generator().manual_seed(seed)
    clean = torch.rand(batch, 3, size, size, generator=g) * 2 - 1
    noise = torch.randn(clean.shape, generator=g)
    t = torch.rand(batch, generator=g)
    with torch.no_grad():  # built once and reused by several forwards, so it must not hold a graph
        cond = make_condition(bundle, ["a red circle"] * batch, None, (size, size))
    return clean, noise, t, cond


def _losses(bundle, repa, clean, noise, t, cond):
    tt = t.view(-1, 1, 1, 1)
    v = bundle.denoiser.velocity((1 - tt) * clean + tt * noise, t, cond)
    fm = (v - (noise - clean)).square().mean()
    return fm, repa(clean, clean.shape[-2], clean.shape[-1])


def test_encoder_gets_no_gradient_while_projector_and_denoiser_do(encoder):
    bundle, repa = _repa_setup(encoder)
    assert not any(n.startswith("encoder") for n, _ in repa.named_parameters())
    assert not any(k.startswith("encoder") for k in repa.state_dict())
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    clean, noise, t, cond = _batch(bundle)
    fm, aux = _losses(bundle, repa, clean, noise, t, cond)
    (fm + aux).backward()
    assert all(p.grad is None for p in encoder.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in repa.projector.parameters())
    tapped_block = bundle.denoiser.net.transformer_blocks[0]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in tapped_block.parameters())
    params = list(repa.parameters()) + list(bundle.denoiser.parameters())
    torch.optim.AdamW(params, lr=1e-2).step()
    assert all(torch.equal(v, encoder.state_dict()[k]) for k, v in before.items())
    assert not encoder.training


def test_lambda_zero_leaves_the_plain_flow_matching_loss(encoder):
    bundle, repa = _repa_setup(encoder, lambda_=0.0)
    clean, noise, t, cond = _batch(bundle)
    fm, aux = _losses(bundle, repa, clean, noise, t, cond)
    assert aux.item() == 0.0 and -1.0 <= repa.last_value <= 1.0  # the unscaled value is still logged
    (fm + aux).backward()
    with_zero = [p.grad.clone() for p in bundle.denoiser.parameters()]
    bundle.denoiser.zero_grad()
    fm, _ = _losses(bundle, repa, clean, noise, t, cond)
    fm.backward()
    assert all(torch.equal(a, p.grad) for a, p in zip(with_zero, bundle.denoiser.parameters()))


def test_repa_loss_refuses_a_wrong_grid_and_a_call_before_the_forward(encoder):
    bundle, repa = _repa_setup(encoder)
    clean, noise, t, cond = _batch(bundle)
    with pytest.raises(RuntimeError, match="velocity"):
        repa(clean, 16, 16)
    _losses(bundle, repa, clean, noise, t, cond)
    with pytest.raises(ValueError, match="grid"):
        repa(clean, 32, 32)  # an 8x8 student grid does not match the 4x4 tokens the forward made


def test_precomputed_targets_at_another_grid_are_interpolated(encoder):
    bundle, repa = _repa_setup(encoder)
    clean, noise, t, cond = _batch(bundle)
    _losses(bundle, repa, clean, noise, t, cond)
    coarse = torch.randn(clean.shape[0], 4, encoder.feature_dim)  # e.g. features cached at a 2x2 grid
    value = repa(clean, 16, 16, target=coarse, target_grid=(2, 2))
    expected = repa_loss(repa.projector(repa.tap.features), match_grid(coarse, (2, 2), (4, 4)))
    assert value.item() == pytest.approx(0.5 * expected.item(), abs=1e-6)


def test_default_encoder_comes_from_the_spec():
    bundle = build_bundle(MODEL.validate_python(PIXEL_MMDIT), seed=0)
    repa = RepaLoss(Repa.model_validate({"depth": 1}), bundle.denoiser, 64)
    assert isinstance(repa.encoder, EfficientNetLite0) and repa.projector.net[-1].out_features == 1280
    assert repa.projector.net[0].out_features == 2048 and repa.lambda_ == 0.5


def test_one_step_on_fm_plus_repa_reduces_the_repa_loss(encoder):
    torch.manual_seed(0)
    bundle, repa = _repa_setup(encoder, lambda_=0.5, depth=1)
    batch = _batch(bundle, seed=1)
    params = list(repa.parameters()) + [p for m in bundle.trainable_modules().values() for p in m.parameters()]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    fm, aux = _losses(bundle, repa, *batch)
    before = repa.last_value
    assert aux.item() == pytest.approx(0.5 * before)
    (fm + aux).backward()
    optimizer.step()
    with torch.no_grad():
        _losses(bundle, repa, *batch)
    assert repa.last_value < before - 1e-3


def test_several_repa_terms_each_add_their_own_loss_and_projector(encoder):
    """Every aux_losses entry is a term of the flow-matching objective (aligning its own block), not just the first."""
    from flowspec.runtime.data.stream import BatchStream
    from flowspec.runtime.objectives.flow_matching import FlowMatching
    from flowspec.runtime.ops.context import StageContext
    from flowspec.schemas.stages import Pretrain

    bundle = build_bundle(MODEL.validate_python(PIXEL_MMDIT), seed=0)
    stage = Pretrain.model_validate({
        "name": "pretrain", "steps": 1, "data": {"source": {"kind": "shapes", "num_images": 8},
                                                  "curriculum": [{"resolution": 16}]},
        "timesteps": {}, "optimizer": {}, "train": {"cfg_dropout": 0.0}, "executor": {},
        "aux_losses": [{"kind": "repa", "depth": 1, "lambda": 0.5, "projector_dim": 32},
                       {"kind": "repa", "depth": 2, "lambda": 0.25, "projector_dim": 16}]})
    width = bundle.denoiser.config["num_attention_heads"] * bundle.denoiser.config["attention_head_dim"]
    terms = [RepaLoss(block, bundle.denoiser, width, encoder=encoder) for block in stage.aux_losses]
    feed = BatchStream(stage.data, 0, 4, 1, 4)
    objective = FlowMatching(StageContext(stage=stage, seed=0, device=torch.device("cpu"), bundle=bundle, feed=feed,
                                          repa=terms))
    loss, tensors = objective(0, 0)
    metrics = {k: float(v) for k, v in tensors.items() if k.endswith("loss") or k.startswith("repa_loss")}
    assert loss.item() == pytest.approx(metrics["fm_loss"] + 0.5 * metrics["repa_loss"] + 0.25 * metrics["repa_loss_1"],
                                        rel=1e-6)
    assert [t.tap.depth for t in terms] == [1, 2] and metrics["repa_loss"] != metrics["repa_loss_1"]
    modules = objective.modules()
    assert list(modules) == ["repa_projector", "repa_projector_1"] and modules["repa_projector_1"] is terms[1]
    loss.backward()
    assert all(p.grad is not None for term in terms for p in term.projector.parameters())
