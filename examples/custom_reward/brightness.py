"""A user reward for `reward: {kind: module, target: brightness:reward, differentiable: true}`.

flowspec calls it with a batch of images (B, 3, H, W) in [0, 1] and their prompts, and expects one
reward per image. Being plain torch, it is differentiable, so ReFL may back-propagate through it.
"""
import torch


def reward(images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    """Prefers brighter images: the mean pixel value, in [0, 1]."""
    del prompts
    return images.mean(dim=(1, 2, 3))
