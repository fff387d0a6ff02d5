"""A model bundle (denoiser, text encoder, latent codec): built from the spec, loaded, exported.

An exported stage folder holds `denoiser/` (a diffusers model folder: the backbone's class loads it
with from_pretrained), `text_encoder/` when the encoder is trained with the model, and
`adapter.safetensors` for adapter-owned weights (DiT's text projection).
"""
from __future__ import annotations

import copy
import dataclasses
import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .adapters import Denoiser, wrap
from .build import build_denoiser, denoiser_class
from .latent import build_codec
from .text import BuiltinTextEncoder, build_text_encoder


@dataclass
class ModelBundle:
    denoiser: Denoiser
    text_encoder: nn.Module | None
    codec: nn.Module

    def trainable_modules(self) -> dict[str, nn.Module]:
        """What the optimizer updates and a checkpoint stores, by name."""
        modules = {"denoiser": self.denoiser}
        if isinstance(self.text_encoder, BuiltinTextEncoder):
            modules["text_encoder"] = self.text_encoder
        return modules

    def train(self, mode: bool = True) -> "ModelBundle":
        self.denoiser.train(mode)
        if isinstance(self.text_encoder, BuiltinTextEncoder):
            self.text_encoder.train(mode)
        return self

    def eval(self) -> "ModelBundle":
        return self.train(False)

    def to(self, device) -> "ModelBundle":
        self.denoiser.to(device)
        self.codec.to(device)
        if self.text_encoder is not None:
            self.text_encoder.to(device)
        return self


@contextmanager
def single_threaded():
    """Build models on one thread. Constructors compute buffers such as SD3's sin/cos position table
    with multi-threaded elementwise kernels whose last bits changed from process to process (measured:
    2 runs in 24), which broke bitwise resume; one thread makes the initial weights a function of the
    seed alone."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def freeze(bundle: ModelBundle) -> ModelBundle:
    """No gradients, and eval mode (a teacher or reference never trains: no dropout, no recomputation)."""
    for module in bundle.trainable_modules().values():
        module.requires_grad_(False).eval()
    return bundle


def frozen_copy(bundle: ModelBundle) -> ModelBundle:
    """The bundle with frozen copies of its trainable parts (a reference or teacher policy); its frozen
    parts (a pretrained text encoder, the codec) are shared, not copied."""
    parts = {name: copy.deepcopy(module) for name, module in bundle.trainable_modules().items()}
    return freeze(dataclasses.replace(bundle, **parts))


def build_bundle(model_spec, seed: int, device: str | torch.device = "cpu") -> ModelBundle:
    """Random initialisation from `seed` (or model.init.path), the same in every process."""
    with single_threaded():
        bundle = _build(model_spec, seed)
    return bundle.to(device)


def _build(model_spec, seed: int) -> ModelBundle:
    torch.manual_seed(seed)
    net = build_denoiser(model_spec)
    if model_spec.init.path:
        load_backbone(net, model_spec, Path(model_spec.init.path), model_spec.init.subfolder)
    text_encoder = build_text_encoder(model_spec)
    pooled = getattr(text_encoder, "config", {}).get("pooled_width") if text_encoder is not None else None
    if text_encoder is not None and pooled is None:
        pooled = _pooled_width(text_encoder)
    denoiser = wrap(net, model_spec, pooled)
    return ModelBundle(denoiser, text_encoder, build_codec(model_spec.latent))


def _pooled_width(encoder: nn.Module) -> int:
    with torch.no_grad():
        return int(encoder([""]).pooled.shape[-1])


def load_backbone(net: nn.Module, model_spec, path: Path, subfolder: str | None = None) -> None:
    """Weights from a diffusers model folder or a .safetensors file into an already-built backbone."""
    if path.suffix == ".safetensors":
        state = load_file(str(path))
    else:
        folder = path / subfolder if subfolder else path
        loaded = denoiser_class(model_spec.kind).from_pretrained(str(folder))
        state = loaded.state_dict()
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shapes differ: the weights were made for another configuration
        missing, unexpected = [str(exc).splitlines()[1].strip()], []
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not fit the {model_spec.kind} preset '{model_spec.preset}' "
                         f"({len(missing)} missing keys, e.g. {missing[:3]}; {len(unexpected)} unexpected, "
                         f"e.g. {unexpected[:3]}): check model.preset and model.config")


def export_bundle(bundle: ModelBundle, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    bundle.denoiser.net.save_pretrained(str(folder / "denoiser"))
    adapter_state = {k: v.detach().cpu().contiguous() for k, v in bundle.denoiser.state_dict().items()
                     if not k.startswith("net.")}
    if adapter_state:
        save_file(adapter_state, str(folder / "adapter.safetensors"))
    if isinstance(bundle.text_encoder, BuiltinTextEncoder):
        target = folder / "text_encoder"
        target.mkdir(exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in bundle.text_encoder.state_dict().items()}
        save_file(state, str(target / "model.safetensors"))
        (target / "config.json").write_text(json.dumps(bundle.text_encoder.config, indent=2))


def load_exported(bundle: ModelBundle, folder: Path) -> None:
    """Weights of an exported stage folder into a bundle built from the same model spec. A LoRA stage
    exports its adapter (and the merged model only with `merge_on_export`): its base is loaded first, from
    the folder its base.json names, and the adapter merged in, refused if the base's hash differs."""
    from .lora import apply_lora, read_base

    base = read_base(folder)
    if base is not None and not (folder / "denoiser").is_dir():
        load_exported(bundle, Path(base["base"]))
        apply_lora(bundle, folder, base["base_hash"])
        return
    load_backbone(bundle.denoiser.net, bundle.denoiser.spec, folder / "denoiser")
    if (folder / "adapter.safetensors").exists():
        state = load_file(str(folder / "adapter.safetensors"))
        missing, unexpected = bundle.denoiser.load_state_dict(state, strict=False)
        assert not unexpected, unexpected
    if isinstance(bundle.text_encoder, BuiltinTextEncoder) and (folder / "text_encoder").exists():
        bundle.text_encoder.load_state_dict(load_file(str(folder / "text_encoder" / "model.safetensors")))
