"""The preset tables agree with the real diffusers classes, and every tiny preset runs a forward."""
import inspect
import re

import pytest
import torch
from torch import nn

from flowspec.runtime.models.build import build_denoiser, build_vae, denoiser_class, example_inputs
from flowspec.schemas.lora_targets import ADAPTABLE
from flowspec.schemas.model import VAE
from flowspec.schemas.presets import CONFIG_KEYS, MODEL_PRESETS, VAE_PRESETS
from flowspec.schemas.spec import Spec

FAMILIES = sorted(MODEL_PRESETS)


def model_spec(family: str, preset: str = "tiny", **config):
    adapter = Spec.model_fields["model"].annotation
    from pydantic import TypeAdapter

    return TypeAdapter(adapter).validate_python({"kind": family, "preset": preset, "config": config})


@pytest.mark.parametrize("family", FAMILIES)
def test_config_keys_are_the_constructor_keywords(family):
    params = set(inspect.signature(denoiser_class(family).__init__).parameters) - {"self"}
    assert CONFIG_KEYS[family] == params


@pytest.mark.parametrize("family", FAMILIES)
def test_every_preset_uses_known_keys_only(family):
    for name, config in MODEL_PRESETS[family].items():
        assert set(config) <= CONFIG_KEYS[family], name


@pytest.mark.parametrize("family", FAMILIES)
def test_adaptable_module_table_matches_the_real_model(family):
    model = build_denoiser(model_spec(family), device="meta")
    names = {re.sub(r"\.\d+(?=\.|$)", ".#", n) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    assert names == set(ADAPTABLE[family])


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_preset_runs_a_forward_with_its_example_inputs(family):
    spec = model_spec(family)
    model = build_denoiser(spec).eval()
    side = 8
    inputs = example_inputs(spec, 2, side, side, text_tokens=5, device="cpu")
    with torch.no_grad():
        out = model(inputs["x"], inputs["t"]) if family == "mlp" else model(**inputs, return_dict=False)[0]
    expected_in = inputs.get("hidden_states", inputs.get("sample", inputs.get("x")))
    assert out.shape[0] == 2 and out.shape[-1] == expected_in.shape[-1]


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_vae_factor_is_the_real_downsampling(preset):
    latent = VAE(kind="vae", preset=preset)
    vae = build_vae(latent).eval()
    with torch.no_grad():
        z = vae.encode(torch.zeros(1, 3, 64, 64)).latent_dist.mode()
    assert z.shape == (1, latent.channels(), 64 // latent.factor(), 64 // latent.factor())
    assert set(VAE_PRESETS[preset]) <= set(inspect.signature(type(vae).__init__).parameters)
