"""Moving host tensors to the training device."""
from __future__ import annotations

import torch


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on `device` without waiting for the device: a blocking copy would wait for every kernel
    queued before it, so the host could no longer run ahead of a GPU (a no-op on the CPU)."""
    return tensor.to(device, non_blocking=True)
