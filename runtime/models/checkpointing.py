"""model.gradient_checkpointing: which of the denoiser's regions recompute their activations in the backward pass.

diffusers' models route each block they may checkpoint (a transformer block, a UNet resnet or attention block)
through `_gradient_checkpointing_func`; `true` checkpoints every one of them (diffusers' own), and a list of
regions (`auto`'s choice, made by the plan's memory estimate) checkpoints those inside the named regions only
and runs the others as usual. Recomputation repeats the same operations on the same inputs (with the random
state saved), so the weights a run ends with do not depend on the choice.
"""
from __future__ import annotations

from torch import nn
from torch.utils.checkpoint import checkpoint

from ..train.speed import regions


def enable_checkpointing(net: nn.Module, names: tuple[str, ...] | None) -> None:
    """Checkpoint every block of `net` (names None) or those inside the regions `names`."""
    found = dict(regions(net))
    if names is None or (found and set(found) <= set(names)):
        net.enable_gradient_checkpointing()
        return
    if not names:
        return
    unknown = set(names) - set(found)
    if unknown:
        raise ValueError(f"no region {sorted(unknown)} in the denoiser (its regions: {list(found)})")
    chosen = {id(m) for name in names for m in found[name].modules()}

    def recompute_chosen(block, *args, **kwargs):
        if id(block) in chosen:
            return checkpoint(block.__call__, *args, use_reentrant=False, **kwargs)
        return block(*args, **kwargs)

    net.enable_gradient_checkpointing(recompute_chosen)
