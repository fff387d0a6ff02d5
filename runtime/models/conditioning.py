"""Build a family's Condition from captions and labels; the empty condition for guidance and dropout."""
from __future__ import annotations

import torch

from ..core.device import to_device
from .adapters import Condition
from .bundle import ModelBundle
from .offload import execution_device


def null_class(bundle: ModelBundle) -> int | None:
    config = bundle.denoiser.config
    if bundle.denoiser.spec.kind == "dit":
        return config["num_embeds_ada_norm"]  # DiT's label table has one extra row for "no class"
    if bundle.denoiser.spec.kind == "mlp" and config.get("num_classes"):
        return config["num_classes"]
    return None


def make_condition(bundle: ModelBundle, captions: list[str], class_labels: torch.Tensor | None,
                   image_size: tuple[int, int] | None, drop: torch.Tensor | None = None) -> Condition:
    """`drop[i]` replaces sample i's condition by the empty one (classifier-free guidance training)."""
    device = execution_device(bundle.denoiser)
    text = None
    if bundle.text_encoder is not None:
        if drop is not None:
            captions = ["" if d else c for c, d in zip(captions, drop.tolist())]
        text = bundle.text_encoder(captions).to(device)
    labels = None
    null = null_class(bundle)
    if null is not None and class_labels is not None:
        labels = to_device(class_labels, device)
        if drop is not None:  # where, not a masked assignment: a boolean index waits for the device
            labels = torch.where(to_device(drop, device), null, labels)
    return Condition(text=text, class_labels=labels, image_size=image_size)


def empty_condition(bundle: ModelBundle, batch: int, image_size: tuple[int, int] | None) -> Condition:
    null = null_class(bundle)
    labels = torch.full((batch,), null, dtype=torch.long) if null is not None else None
    return make_condition(bundle, [""] * batch, labels, image_size)
