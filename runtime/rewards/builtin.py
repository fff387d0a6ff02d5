"""The builtin rewards: the shapes checker and its differentiable colour cousin, DDPO's JPEG sizes, a
region of the plane for 2-D points, and `module:function` plugins."""
from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ...schemas.targets import load_target, search_path
from ..data.shapes import BACKGROUNDS, COLORS
from . import Reward, register_reward


def to_uint8(images: Tensor) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] -> (N, H, W, 3) uint8, as the samplers write images."""
    pixels = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).cpu().numpy()


def points(items: Tensor, kind: str) -> Tensor:
    if items.dim() != 2 or items.shape[1] != 2:
        raise ValueError(f"{kind} scores 2-D points (N, 2), not items of shape {tuple(items.shape)}")
    return items


def images(items: Tensor, kind: str) -> Tensor:
    if items.dim() != 4 or items.shape[1] != 3:
        raise ValueError(f"{kind} scores RGB images (N, 3, H, W), not items of shape {tuple(items.shape)}")
    return items


@register_reward("shapes_checker")
class ShapesChecker(Reward):
    """The fraction of the caption's checks (colour, shape, count, and size, position, relation where the
    caption asks) that the image passes: 1 exactly when the checker accepts it."""

    def score(self, items, prompts):
        from ..eval.checker import check

        results = [check(image, prompt).checks for image, prompt in zip(to_uint8(images(items, self.kind)), prompts)]
        return torch.tensor([sum(r.values()) / len(r) for r in results])


@register_reward("shapes_color")
class ShapesColor(Reward):
    """Soft colour agreement: every pixel is softly assigned to the nearest of the six shape colours or a
    background (white, black, the noise grey) with softmax(-d^2 / temperature) in [0, 1] RGB; the reward is
    the share of the colour mass (backgrounds left out) that falls on colours the caption names."""

    def __init__(self, block, spec_dir=None):
        super().__init__(block, spec_dir)
        palette = [*COLORS.values(), *((v, v, v) for v in BACKGROUNDS.values())]
        self.palette = torch.tensor(palette, dtype=torch.float32) / 255.0  # (K, 3)
        self.names = list(COLORS)

    def score(self, items, prompts):
        x = (images(items, self.kind).float().clamp(-1, 1) + 1) / 2  # (N, 3, H, W) in [0, 1]
        palette = self.palette.to(x.device)
        distance = ((x.unsqueeze(1) - palette[None, :, :, None, None]) ** 2).sum(dim=2)  # (N, K, H, W)
        mass = torch.softmax(-distance / self.block.temperature, dim=1).mean(dim=(2, 3))[:, :len(self.names)]
        named = torch.tensor([[name in prompt.lower().split() for name in self.names] for prompt in prompts],
                             dtype=x.dtype, device=x.device)
        if not bool(named.any(dim=1).all()):
            lacking = int((~named.any(dim=1)).nonzero()[0])
            raise ValueError(f"caption {prompts[lacking]!r} names none of the colours {', '.join(self.names)}")
        return (mass * named).sum(dim=1) / (mass.sum(dim=1) + 1e-3)


class _Jpeg(Reward):
    sign = 1.0

    def score(self, items, prompts):
        sizes = []
        for image in to_uint8(images(items, self.kind)):
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="JPEG", quality=self.block.quality)
            sizes.append(buffer.tell() / 1000.0)
        return self.sign * torch.tensor(sizes)


@register_reward("jpeg_compressibility")
class JpegCompressibility(_Jpeg):
    sign = -1.0


@register_reward("jpeg_incompressibility")
class JpegIncompressibility(_Jpeg):
    sign = 1.0


@register_reward("toy2d_region")
class Toy2DRegion(Reward):
    """Minus the distance from each point to the union of the target discs (0 inside one)."""

    def score(self, items, prompts):
        x = points(items, self.kind).float()
        centers = torch.tensor(self.block.centers, dtype=x.dtype, device=x.device)
        nearest = torch.cdist(x, centers).min(dim=1).values
        return -(nearest - self.block.radius).clamp(min=0)


@register_reward("module")
class ModuleReward(Reward):
    """`package.module:function`(items, prompts) -> one float per item (a tensor, an array or a list)."""

    def __init__(self, block, spec_dir=None):
        super().__init__(block, spec_dir)
        self.function = load_target(block.target, search_path(spec_dir))

    def score(self, items, prompts):
        return self.function(items, list(prompts))
