"""Frozen vision encoders: EfficientNet-lite0 from its wheel, DINOv2 and any ViT-style model from local
folders (tiny random models saved into tmp_path), all offline."""
import json
import sys

import pytest
import torch
from pydantic import TypeAdapter

from flowspec.runtime.models.vision import (IMAGENET_MEAN, IMAGENET_STD, DINOv2, EfficientNetLite0, HFVision,
                                            build_vision_encoder)
from flowspec.schemas.rewards import VisionEncoder as VisionEncoderSpec

SPEC = TypeAdapter(VisionEncoderSpec)


@pytest.fixture(scope="module")
def effnet():
    return EfficientNetLite0()


def images(batch, height, width, seed=0):
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def capture_inputs(model):
    """The pixel_values the wrapped model receives and the last_hidden_state it returns."""
    seen = {}

    def before(module, args, kwargs):
        seen["pixels"] = kwargs.get("pixel_values", args[0] if args else None)

    def after(module, args, kwargs, out):
        seen["states"] = out.last_hidden_state if hasattr(out, "last_hidden_state") else out

    model.register_forward_pre_hook(before, with_kwargs=True)
    model.register_forward_hook(after, with_kwargs=True)
    return seen


def capture_effnet(effnet, monkeypatch):
    """The same for EfficientNet, whose extract_features (not forward) gives the feature map."""
    seen, original = {}, effnet.model.extract_features

    def extract(pixels):
        seen["pixels"] = pixels
        seen["states"] = original(pixels)
        return seen["states"]

    monkeypatch.setattr(effnet.model, "extract_features", extract)
    return seen


# ------------------------------------------------------------------------------ EfficientNet
@pytest.mark.parametrize("size, grid", [((64, 64), (4, 4)), ((48, 80), (3, 5))])
def test_efficientnet_gives_the_grid_it_promises(effnet, size, grid, monkeypatch):
    assert effnet.grid_for(*size) == grid  # one token per 16 px by default
    seen = capture_effnet(effnet, monkeypatch)
    tokens = effnet.patch_features(images(2, *size))
    assert tokens.shape == (2, grid[0] * grid[1], 1280)
    assert seen["pixels"].shape[-2:] == (32 * grid[0], 32 * grid[1])  # resized to stride x grid
    assert torch.allclose(tokens, seen["states"].flatten(2).transpose(1, 2))  # row-major feature map


def test_efficientnet_takes_an_explicit_grid_and_its_normalisation_is_the_identity(effnet, monkeypatch):
    seen = capture_effnet(effnet, monkeypatch)
    x = images(1, 64, 96)
    assert effnet.patch_features(x, grid=(2, 3)).shape == (1, 6, 1280)
    assert torch.allclose(seen["pixels"], x)  # mean = std = 0.5 on [0, 1] is exactly [-1, 1]; no resize needed


def test_efficientnet_is_frozen_and_deterministic(effnet):
    effnet.train()
    assert not effnet.training and not effnet.model.training
    assert not any(p.requires_grad for p in effnet.parameters())
    x = images(2, 32, 32).requires_grad_(True)
    first = effnet.patch_features(x)
    assert not first.requires_grad
    assert torch.equal(first, effnet.patch_features(x))


def test_efficientnet_separates_clearly_different_images(effnet):
    noise = torch.Generator().manual_seed(0)

    def render(rgb):
        base = torch.full((1, 3, 64, 64), -1.0)
        base[:, :, 16:48, 16:48] = torch.tensor(rgb).view(1, 3, 1, 1)  # a coloured square on black
        return base + 0.05 * torch.randn(base.shape, generator=noise)

    red_a, red_b, blue = (effnet.patch_features(render(c)).mean(1)
                          for c in ((1.0, -1.0, -1.0), (1.0, -1.0, -1.0), (-1.0, -1.0, 1.0)))
    same = torch.cosine_similarity(red_a, red_b).item()
    different = torch.cosine_similarity(red_a, blue).item()
    assert same > 0.95 and different < same - 0.05  # measured: 0.97 vs 0.87


def test_missing_efficientnet_packages_ask_for_the_repa_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)  # makes the import fail
    with pytest.raises(ImportError, match=r"flowspec\[repa\]"):
        build_vision_encoder(SPEC.validate_python({"kind": "efficientnet_lite0"}))


def test_build_dispatches_on_kind(tmp_path):
    assert isinstance(build_vision_encoder(SPEC.validate_python({})), EfficientNetLite0)

    class Unknown:
        kind = "clip_vision"

    with pytest.raises(ValueError, match="unknown vision encoder kind"):
        build_vision_encoder(Unknown())
    with pytest.raises(FileNotFoundError, match="config.json"):
        build_vision_encoder(SPEC.validate_python({"kind": "dinov2", "path": str(tmp_path / "absent")}))


# --------------------------------------------------------------------------- local ViT folders
def save_dinov2(folder, registers=0):
    from transformers import Dinov2Config, Dinov2Model, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    sizes = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=28, patch_size=14)
    torch.manual_seed(0)
    if registers:
        model = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(num_register_tokens=registers, **sizes))
    else:
        model = Dinov2Model(Dinov2Config(**sizes))
    model.save_pretrained(str(folder))
    return str(folder)


@pytest.mark.parametrize("registers", [0, 2])
def test_dinov2_keeps_the_layer_normed_patch_tokens_only(tmp_path, registers):
    encoder = build_vision_encoder(SPEC.validate_python({"kind": "dinov2", "path": save_dinov2(tmp_path, registers)}))
    assert isinstance(encoder, DINOv2) and encoder.feature_dim == 32
    assert not any(p.requires_grad for p in encoder.parameters()) and not encoder.training
    seen = capture_inputs(encoder.model)
    tokens = encoder.patch_features(torch.zeros(2, 3, 40, 56), grid=(2, 3))
    assert seen["pixels"].shape == (2, 3, 28, 42)  # bicubic to 14 x grid
    assert seen["states"].shape[1] == 1 + registers + 6
    assert torch.equal(tokens, seen["states"][:, 1 + registers:])  # CLS and registers dropped
    # [-1, 1] -> [0, 1] -> ImageNet mean/std: a grey (0) image becomes (0.5 - mean) / std per channel.
    expected = (0.5 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(seen["pixels"][0, :, 0, 0], expected, atol=1e-6)
    assert encoder.patch_features(images(1, 64, 48)).shape == (1, 4 * 3, 32)  # default grid: 16 px per token


def test_dinov2_refuses_another_model_type(tmp_path):
    from transformers import ViTConfig, ViTModel

    ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                       image_size=32, patch_size=8)).save_pretrained(str(tmp_path))
    with pytest.raises(ValueError, match="hf_vision"):
        DINOv2(str(tmp_path))


def test_hf_vision_drops_the_cls_token_it_counts(tmp_path):
    encoder = HFVision(save_dinov2(tmp_path / "dino"))
    seen = capture_inputs(encoder.model)
    tokens = encoder.patch_features(images(2, 32, 32), grid=(3, 2))
    assert tokens.shape == (2, 6, 32) and seen["states"].shape[1] == 7
    assert torch.equal(tokens, seen["states"][:, 1:])


def test_hf_vision_reads_the_folder_normalisation_and_interpolates_positions(tmp_path):
    from transformers import ViTConfig, ViTModel

    ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                       image_size=32, patch_size=8)).save_pretrained(str(tmp_path))
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3, "image_std": [0.5] * 3}))
    encoder = build_vision_encoder(SPEC.validate_python({"kind": "hf_vision", "path": str(tmp_path)}))
    assert encoder.grid_for(48, 80) == (3, 5)
    seen = capture_inputs(encoder.model)
    x = images(2, 24, 40)
    tokens = encoder.patch_features(x, grid=(3, 5))  # 24 x 40 px: not the 32 x 32 the model was made for
    assert tokens.shape == (2, 15, 32) and seen["states"].shape[1] == 16
    assert torch.equal(tokens, seen["states"][:, 1:])
    assert torch.allclose(seen["pixels"], x, atol=1e-6)  # mean = std = 0.5 maps [-1, 1] onto itself
