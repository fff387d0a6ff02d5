"""REPA (Yu et al. 2024): align a transformer block's image tokens with a frozen encoder's patch features.

    L = L_FM + lambda * L_REPA,   L_REPA = -mean_{batch, tokens} cos(h_phi(H_t^[n]), y*^[n])

Call order in a training step (one micro-batch):

    v = denoiser.velocity(x_t, t, cond)      # the BlockTap hook keeps block `depth`'s image tokens
    loss = fm_loss(v, target) + repa(clean_images, latent_height, latent_width)
    loss.backward()

`repa(...)` reads the tokens of the forward the caller just ran, so it must come after that forward and
before the next one. The target grid is matched in pixel space (the encoder resizes the clean images to
its stride x the student grid, see vision.py); `match_grid` is the bilinear feature-space fallback for
targets given at another grid (e.g. precomputed features).
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .vision import VisionEncoder, build_vision_encoder

TAPPED_FAMILIES = ("dit", "pixart", "mmdit", "flux")


class Projector(nn.Module):
    """REPA's h_phi: a 3-layer MLP applied to every token."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, hidden_dim),
                                 nn.SiLU(), nn.Linear(hidden_dim, out_dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.net(tokens)


def repa_loss(projected: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Minus the mean cosine similarity over batch and tokens; shapes must match exactly (never broadcast)."""
    if projected.dim() != 3 or projected.shape != target.shape:
        raise ValueError(f"REPA needs (B, N, D) features of equal shape, got projected {tuple(projected.shape)} "
                         f"and target {tuple(target.shape)} (student and encoder token grids must match)")
    # float32 because bf16 cosines are too coarse for a loss that lives near -1; clamp removes the
    # rounding excess so the value stays in [-1, 1].
    cos = F.cosine_similarity(projected.float(), target.float(), dim=-1, eps=1e-8)
    return -cos.clamp(-1.0, 1.0).mean()


def match_grid(features: torch.Tensor, grid: tuple[int, int], target_grid: tuple[int, int]) -> torch.Tensor:
    """(B, gh*gw, D) on `grid` -> (B, th*tw, D) on `target_grid`: identity, else bilinear in feature space."""
    batch, tokens, dim = features.shape
    gh, gw = grid
    if tokens != gh * gw:
        raise ValueError(f"{tokens} tokens do not form a {gh}x{gw} grid")
    if tuple(grid) == tuple(target_grid):
        return features
    maps = features.transpose(1, 2).reshape(batch, dim, gh, gw)
    maps = F.interpolate(maps, size=tuple(target_grid), mode="bilinear", align_corners=False)
    return maps.flatten(2).transpose(1, 2)


def student_grid(family: str, config: Mapping, latent_height: int, latent_width: int) -> tuple[int, int]:
    """Image-token grid of a backbone for a latent of latent_height x latent_width cells."""
    if family == "flux":
        return latent_height // 2, latent_width // 2  # the adapter packs 2x2 latent cells into one token
    if family in TAPPED_FAMILIES:
        patch = int(config.get("patch_size", 1))
        return latent_height // patch, latent_width // patch
    raise ValueError(f"REPA aligns transformer blocks; the {family} family has none")


def transformer_blocks(denoiser) -> list[nn.Module]:
    """The family's blocks in execution order (Flux: the double blocks, then the single blocks)."""
    family = denoiser.spec.kind
    if family not in TAPPED_FAMILIES:
        raise ValueError(f"REPA aligns transformer blocks; the {family} family has none")
    blocks = list(denoiser.net.transformer_blocks)
    if family == "flux":
        blocks += list(denoiser.net.single_transformer_blocks)
    return blocks


class BlockTap:
    """Keeps the image tokens (B, N_img, D_model) output by the `depth`-th block (1-based) of a denoiser.

    Block outputs (diffusers >= 0.32): DiT and PixArt blocks return the token tensor; SD3 joint blocks and
    Flux double blocks return (encoder_hidden_states, hidden_states), the image tokens second; Flux single
    blocks return the same pair in recent diffusers, while older ones return one sequence with the text
    tokens first, whose length the tap reads from the backbone's `encoder_hidden_states` input.
    """

    def __init__(self, denoiser, depth: int):
        blocks = transformer_blocks(denoiser)
        if not 1 <= depth <= len(blocks):
            raise ValueError(f"REPA depth {depth} is outside the {denoiser.spec.kind} model's 1..{len(blocks)} blocks")
        self.depth = depth
        # Only a Flux single block may return text and image tokens as one sequence (older diffusers).
        self._joint_sequence = denoiser.spec.kind == "flux" and depth > len(denoiser.net.transformer_blocks)
        self._features: torch.Tensor | None = None
        self._text_tokens = 0
        self._handles = [denoiser.net.register_forward_pre_hook(self._new_forward, with_kwargs=True),
                         blocks[depth - 1].register_forward_hook(self._keep)]

    def _new_forward(self, module, args, kwargs):
        self._features = None
        text = kwargs.get("encoder_hidden_states")
        self._text_tokens = text.shape[1] if isinstance(text, torch.Tensor) else 0

    def _keep(self, module, args, output):
        # Only the first call per backbone forward: gradient checkpointing re-runs the block during
        # backward, and that recomputation must not replace the tokens the loss was built from.
        if self._features is not None:
            return
        if isinstance(output, tuple):
            self._features = output[1]
        elif self._joint_sequence:
            self._features = output[:, self._text_tokens:]
        else:
            self._features = output

    @property
    def features(self) -> torch.Tensor:
        if self._features is None:
            raise RuntimeError("no tapped features: run denoiser.velocity (the forward to align) before REPA")
        return self._features

    def clear(self) -> None:
        self._features = None

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._features = None


class RepaLoss(nn.Module):
    """lambda * L_REPA for the forward just run. Owns the trainable projector and the frozen encoder.

    The encoder is kept out of this module's parameters and state_dict (it is frozen and comes from its
    own weights, so optimizers and checkpoints should not carry it) but follows .to(device).
    """

    def __init__(self, block, denoiser, model_width: int, encoder: VisionEncoder | None = None):
        super().__init__()
        self.lambda_ = float(block.lambda_)
        self.family, self.config = denoiser.spec.kind, denoiser.config
        self.tap = BlockTap(denoiser, block.depth)
        object.__setattr__(self, "encoder", encoder if encoder is not None else build_vision_encoder(block.encoder))
        self.projector = Projector(model_width, block.projector_dim, self.encoder.feature_dim)
        self._last: torch.Tensor | None = None
        self.cache = None  # a ContentCache of encoder features by image content, when data.cache.repa_targets

    def _apply(self, fn, recurse=True):
        self.encoder._apply(fn, recurse)
        return super()._apply(fn, recurse)

    def forward(self, clean_images: torch.Tensor, latent_height: int, latent_width: int,
                target: torch.Tensor | None = None, target_grid: tuple[int, int] | None = None) -> torch.Tensor:
        """clean_images in [-1, 1] (B, 3, H, W); `target`/`target_grid`: precomputed encoder tokens instead."""
        student = self.tap.features
        grid = student_grid(self.family, self.config, latent_height, latent_width)
        if student.shape[1] != grid[0] * grid[1]:
            raise ValueError(f"the tapped block gave {student.shape[1]} image tokens, but a {latent_height}x"
                             f"{latent_width} latent makes a {grid[0]}x{grid[1]} grid")
        if target is not None and target_grid is None:
            raise ValueError("a precomputed target needs its target_grid")
        if target is None:
            target, target_grid = self.encoder.patch_features(clean_images, grid=grid), grid
        with torch.no_grad():
            target = match_grid(target.detach(), target_grid, grid).to(student.device)
        value = repa_loss(self.projector(student), target)
        self._last = value.detach()  # converted only when read: no device sync per step
        return value * self.lambda_

    def cached_targets(self, clean_images: torch.Tensor, keys: list[str], latent_height: int, latent_width: int,
                       cache) -> tuple[torch.Tensor, tuple[int, int]]:
        """Encoder tokens of the clean images, read from `cache` where an item (by content key) has them."""
        from ..data.cache import content_key, module_fingerprint

        grid = student_grid(self.family, self.config, latent_height, latent_width)
        if getattr(self, "_fingerprint", None) is None:
            object.__setattr__(self, "_fingerprint", module_fingerprint(self.encoder, type(self.encoder).__name__))
        full = [content_key(item=k, encoder=self._fingerprint, grid=grid) for k in keys]
        found = [cache.get(k) for k in full]
        missing = [i for i, f in enumerate(found) if f is None]
        if missing:
            fresh = self.encoder.patch_features(clean_images[missing], grid=grid)
            for j, i in enumerate(missing):
                found[i] = {"tokens": fresh[j]}
                cache.put(full[i], found[i])
        return torch.stack([f["tokens"] for f in found]).to(clean_images.device), grid

    @property
    def last_value(self) -> torch.Tensor | None:
        """The unscaled L_REPA of the last call, for logging (a tensor: the loop reads it back when it logs)."""
        return self._last

    def remove(self) -> None:
        """Detach the hook from the denoiser (e.g. when the stage ends)."""
        self.tap.remove()
