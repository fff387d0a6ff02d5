"""ADD's discriminator (algorithms.md section 9.4): light trained heads on a frozen feature network.

Images: the frozen encoder (EfficientNet-lite0 from its wheel by default, DINOv2 from a local folder) gives
patch tokens; a head scores each token and a projection term scores the pooled tokens against the caption's
pooled text embedding (a projection discriminator); the logit is their mean plus the projection. The
encoder runs with autograd here (its weights frozen), so the generator's loss reaches the student through it.
2-D points: an MLP on the points. Only the heads train; they are checkpointed with the stage.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

HIDDEN = 256


class Discriminator(nn.Module):
    def __init__(self, encoder: nn.Module | None, text_width: int | None, point_dim: int = 2):
        super().__init__()
        self.encoder = encoder
        width = encoder.feature_dim if encoder is not None else point_dim
        self.head = nn.Sequential(nn.Linear(width, HIDDEN), nn.SiLU(), nn.Linear(HIDDEN, HIDDEN), nn.SiLU(),
                                  nn.Linear(HIDDEN, 1))
        self.project = nn.Linear(text_width, width, bias=False) if text_width and encoder is not None else None

    def features(self, items: torch.Tensor) -> torch.Tensor:
        """(B, N, D) tokens of images in [-1, 1], or the points as (B, 1, d)."""
        if self.encoder is None:
            return items.float().unsqueeze(1)
        enc = self.encoder
        grid = enc.grid_for(*items.shape[-2:])
        pixels = torch.nn.functional.interpolate(items.float(), size=enc.input_size(grid), mode="bilinear",
                                                 align_corners=False)
        pixels = ((pixels.clamp(-1, 1) + 1) / 2 - enc.mean) / enc.std
        return enc.encode(pixels).float()

    def forward(self, items: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        tokens = self.features(items)
        logits = self.head(tokens).squeeze(-1).mean(dim=1)
        if self.project is not None and text is not None:
            logits = logits + (self.project(text.float()) * tokens.mean(dim=1)).sum(-1) / tokens.shape[-1] ** 0.5
        return logits

    def frozen_heads(self, items: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        """The logits with the heads' weights detached: the generator's loss moves the generator alone."""
        trained = {name: p.detach() for name, p in self.named_parameters() if p.requires_grad}
        return functional_call(self, trained, (items, text), strict=False)

    def trained_parameters(self):
        return [p for p in self.parameters() if p.requires_grad]
