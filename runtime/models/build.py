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

    with torch.device(device or "cpu"):
        return AutoencoderKL(**latent_spec.config())


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
