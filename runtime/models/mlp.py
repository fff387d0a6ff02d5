"""A velocity MLP for 2-D toy data: v(x_t, t[, class]) with a sinusoidal time embedding."""
from __future__ import annotations

import math

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of t in [0, 1] (scaled by 1000 so low frequencies still vary across [0, 1])."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


class VelocityMLP(ModelMixin, ConfigMixin):
    """A diffusers ModelMixin, so it saves and loads with save_pretrained / from_pretrained like the rest
    (and diffusers' enable_gradient_checkpointing recomputes its layers in the backward pass)."""

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(self, in_dim: int = 2, hidden_dim: int = 64, num_layers: int = 3, time_embed_dim: int = 32,
                 num_classes: int = 0):
        super().__init__()
        self.time_embed_dim = time_embed_dim
        self.class_embed = nn.Embedding(num_classes + 1, time_embed_dim) if num_classes else None
        layers: list[nn.Module] = [nn.Linear(in_dim + time_embed_dim, hidden_dim), nn.SiLU()]
        for _ in range(num_layers - 1):
            layers += [nn.Linear(hidden_dim, hidden_dim), nn.SiLU()]
        layers.append(nn.Linear(hidden_dim, in_dim))
        self.net = nn.Sequential(*layers)
        self.gradient_checkpointing = False

    def forward(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        emb = timestep_embedding(t, self.time_embed_dim).to(x.dtype)
        if self.class_embed is not None and class_labels is not None:
            emb = emb + self.class_embed(class_labels)
        inputs = torch.cat([x, emb], dim=-1)
        if torch.is_grad_enabled() and self.gradient_checkpointing:
            return self._gradient_checkpointing_func(self.net, inputs)
        return self.net(inputs)
