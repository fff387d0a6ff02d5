"""One interface over every family: `velocity(x_t, t, cond) -> v`, with t the noise level in [0, 1].

Each adapter owns what differs between backbones: the timestep scale (SD3, PixArt, DiT and the SDXL
UNet take 1000 t; Flux multiplies by 1000 itself; the MLP takes t), how conditioning is passed, and
Flux's 2x2 latent packing.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from ..core.device import to_device
from .text import TextCondition


@dataclass
class Condition:
    """What a denoiser is conditioned on; fields a family does not use stay None."""

    text: TextCondition | None = None
    class_labels: torch.Tensor | None = None  # (B,) long
    image_size: tuple[int, int] | None = None  # pixels (height, width), for SDXL/PixArt size conditioning

    def to(self, device) -> "Condition":
        return replace(self, text=self.text.to(device) if self.text else None,
                       class_labels=to_device(self.class_labels, device) if self.class_labels is not None else None)

    @staticmethod
    def cat(a: "Condition", b: "Condition") -> "Condition":
        """Stack two conditions along the batch (one forward for the conditional and unconditional halves)."""
        text = None
        if a.text is not None:
            text = TextCondition(torch.cat([a.text.states, b.text.states]), torch.cat([a.text.mask, b.text.mask]),
                                 torch.cat([a.text.pooled, b.text.pooled]))
        labels = torch.cat([a.class_labels, b.class_labels]) if a.class_labels is not None else None
        return Condition(text, labels, a.image_size)


class Denoiser(nn.Module):
    """Wraps a backbone `net`; subclasses implement `velocity`."""

    timestep_scale = 1000.0

    def __init__(self, net: nn.Module, model_spec):
        super().__init__()
        self.net = net
        self.spec = model_spec
        self.config = model_spec.resolved_config()

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, cond: Condition) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x_t, t, cond):
        return self.velocity(x_t, t, cond)

    def _keep_in_channels(self, out: torch.Tensor) -> torch.Tensor:
        """Checkpoints with a learned variance return 2C channels; the velocity is the first C."""
        channels = self.config["in_channels"]
        return out[:, :channels] if out.shape[1] == 2 * channels else out


class MMDiTDenoiser(Denoiser):
    def velocity(self, x_t, t, cond):
        return self.net(hidden_states=x_t, timestep=t * self.timestep_scale, encoder_hidden_states=cond.text.states,
                        pooled_projections=cond.text.pooled, return_dict=False)[0]


class PixArtDenoiser(Denoiser):
    def velocity(self, x_t, t, cond):
        batch = x_t.shape[0]
        added = {"resolution": None, "aspect_ratio": None}
        if self.config.get("use_additional_conditions"):
            height, width = cond.image_size
            added = {"resolution": torch.tensor([[height, width]], dtype=x_t.dtype, device=x_t.device).repeat(batch, 1),
                     "aspect_ratio": torch.full((batch, 1), height / width, dtype=x_t.dtype, device=x_t.device)}
        out = self.net(hidden_states=x_t, encoder_hidden_states=cond.text.states,
                       encoder_attention_mask=cond.text.mask.to(x_t.dtype), timestep=t * self.timestep_scale,
                       added_cond_kwargs=added, return_dict=False)[0]
        return self._keep_in_channels(out)


class UNetDenoiser(Denoiser):
    def velocity(self, x_t, t, cond):
        added = None
        if self.config.get("addition_embed_type") == "text_time":
            height, width = cond.image_size
            # SDXL micro-conditioning: original size, crop top-left, target size (no crops here).
            ids = torch.tensor([[height, width, 0, 0, height, width]], dtype=x_t.dtype, device=x_t.device)
            added = {"text_embeds": cond.text.pooled, "time_ids": ids.repeat(x_t.shape[0], 1)}
        return self.net(sample=x_t, timestep=t * self.timestep_scale, encoder_hidden_states=cond.text.states,
                        encoder_attention_mask=cond.text.mask.to(x_t.dtype), added_cond_kwargs=added,
                        return_dict=False)[0]


class FluxDenoiser(Denoiser):
    timestep_scale = 1.0  # the transformer multiplies by 1000 itself

    def velocity(self, x_t, t, cond):
        batch, channels, height, width = x_t.shape
        packed = x_t.view(batch, channels, height // 2, 2, width // 2, 2).permute(0, 2, 4, 1, 3, 5)
        packed = packed.reshape(batch, (height // 2) * (width // 2), channels * 4)
        rows, cols = torch.meshgrid(torch.arange(height // 2), torch.arange(width // 2), indexing="ij")
        img_ids = torch.stack([torch.zeros_like(rows), rows, cols], -1).reshape(-1, 3).to(x_t)
        txt_ids = torch.zeros(cond.text.states.shape[1], 3).to(x_t)
        guidance = torch.ones(batch).to(x_t) if self.config.get("guidance_embeds") else None
        out = self.net(hidden_states=packed, timestep=t * self.timestep_scale, guidance=guidance,
                       encoder_hidden_states=cond.text.states, pooled_projections=cond.text.pooled,
                       img_ids=img_ids, txt_ids=txt_ids, return_dict=False)[0]
        out = out.view(batch, height // 2, width // 2, channels, 2, 2).permute(0, 3, 1, 4, 2, 5)
        return out.reshape(batch, channels, height, width)


class DiTDenoiser(Denoiser):
    """Class labels through adaLN; for text, a learned projection of the pooled caption embedding takes
    the place of the label embedding in every block (a forward hook, not a copy of the model code)."""

    def __init__(self, net, model_spec, pooled_width: int | None = None):
        super().__init__(net, model_spec)
        self.null_class = self.config["num_embeds_ada_norm"]
        embedders = [block.norm1.emb.class_embedder for block in net.transformer_blocks]
        for embedder in embedders:
            embedder.dropout_prob = 0.0  # flowspec's cfg_dropout decides when the condition is dropped
        self.text_projection = None
        if model_spec.conditioning == "text":
            inner = self.config["num_attention_heads"] * self.config["attention_head_dim"]
            self.text_projection = nn.Linear(pooled_width, inner)
            self._text_embedding = None
            for embedder in embedders:
                embedder.register_forward_hook(lambda module, args, out: self._text_embedding)

    def velocity(self, x_t, t, cond):
        labels = cond.class_labels
        if self.text_projection is not None:
            self._text_embedding = self.text_projection(cond.text.pooled).to(x_t.dtype)
            labels = torch.zeros(x_t.shape[0], dtype=torch.long, device=x_t.device)
        out = self.net(hidden_states=x_t, timestep=t * self.timestep_scale, class_labels=labels, return_dict=False)[0]
        return self._keep_in_channels(out)


class MLPDenoiser(Denoiser):
    timestep_scale = 1.0

    def velocity(self, x_t, t, cond):
        return self.net(x_t, t * self.timestep_scale, cond.class_labels)


ADAPTERS: dict[str, type[Denoiser]] = {
    "dit": DiTDenoiser, "mmdit": MMDiTDenoiser, "flux": FluxDenoiser, "unet": UNetDenoiser,
    "pixart": PixArtDenoiser, "mlp": MLPDenoiser,
}


def wrap(net: nn.Module, model_spec, pooled_width: int | None = None) -> Denoiser:
    if model_spec.kind == "dit":
        return DiTDenoiser(net, model_spec, pooled_width)
    return ADAPTERS[model_spec.kind](net, model_spec)
