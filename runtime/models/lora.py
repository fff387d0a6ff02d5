"""LoRA on every family: peft adapters injected into the backbone, merged in place, exported for diffusers.

The adapter goes into `bundle.denoiser.net` with `peft.inject_adapter_in_model` for every family (DiT and
PixArt have no diffusers `add_adapter`), so the update of a targeted layer is `W x + (alpha / r) B A x`
with B = 0 at init. Under LoRA only the adapter parameters train: the backbone, the denoiser's own
layers (DiT's text projection) and the text encoder are frozen.

Export writes `<folder>/lora/pytorch_lora_weights.safetensors` in the diffusers pipeline format: keys
prefixed by the component (`transformer.` or `unet.`) and the LoRA config in the file's
`lora_adapter_metadata`, so alpha survives a reload. Loading it back:

- mmdit / flux / unet: `StableDiffusion3Pipeline` / `FluxPipeline` / `StableDiffusionXLPipeline`
  `.lora_state_dict(folder / "lora", weight_name=WEIGHT_NAME)`, or into a bare model with
  `model.load_lora_adapter(str(folder / "lora"), weight_name=WEIGHT_NAME, prefix=COMPONENT[kind])`
  (pass the folder and the weight name: a file path skips the metadata and resets alpha to r).
- dit / pixart / mlp (no diffusers loader): `config = LoraConfig.from_pretrained(folder / "lora")`,
  `inject_adapter_in_model(config, model)`, then `peft.set_peft_model_state_dict(model, state)` with
  `state` the file's tensors with the `transformer.` (mlp: `denoiser.`) prefix removed.

`lora.merge_on_export` is the export step's: after `export_lora`, `merge_lora(bundle)` then
`bundle.export_bundle(bundle, folder)` writes the merged backbone as a plain diffusers model.
"""
from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from peft.tuners.tuners_utils import BaseTunerLayer

from .bundle import ModelBundle

WEIGHT_NAME = "pytorch_lora_weights.safetensors"
COMFY_NAME = "lora_comfyui.safetensors"  # kohya-style names: what ComfyUI and most UIs load
BASE_FILE = "base.json"  # beside lora/ in an exported LoRA stage: the base the adapter was trained on
ADAPTER = "default"
# The pipeline component each family's backbone is, i.e. the key prefix in the exported file.
COMPONENT = {"dit": "transformer", "mmdit": "transformer", "flux": "transformer", "pixart": "transformer",
             "unet": "unet", "mlp": "denoiser"}


def lora_config(block) -> LoraConfig:
    """The peft config of a `lora:` block (a fresh object: peft resolves 'all-linear' in place)."""
    targets = block.targets if isinstance(block.targets, str) else list(block.targets)
    return LoraConfig(r=block.rank, lora_alpha=block.resolved_alpha(), lora_dropout=block.dropout,
                      target_modules=targets, init_lora_weights=True if block.init == "default" else "gaussian")


def is_adapter_parameter(name: str) -> bool:
    return "lora_" in name


def has_lora(bundle: ModelBundle) -> bool:
    return any(isinstance(m, BaseTunerLayer) for m in bundle.denoiser.net.modules())


@contextmanager
def adapters_disabled(bundle: ModelBundle):
    """The frozen base's forward while inside (a preference stage's reference policy, for free); peft's
    own switch, which also gives the adapters their requires_grad back on the way out."""
    layers = [m for m in bundle.denoiser.net.modules() if isinstance(m, BaseTunerLayer)]
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield
    finally:
        for layer in layers:
            layer.enable_adapters(True)


def attach_lora(bundle: ModelBundle, block) -> int:
    """Inject the adapter into the backbone, freeze everything else; the number of trainable parameters
    (equal to runtime.estimate.lora_params for the same spec)."""
    if has_lora(bundle):
        raise ValueError("the denoiser already carries a LoRA adapter")
    inject_adapter_in_model(lora_config(block), bundle.denoiser.net, adapter_name=ADAPTER)
    too_narrow = [(name, min(m.in_features, m.out_features)) for name, m in bundle.denoiser.net.named_modules()
                  if isinstance(m, BaseTunerLayer) and hasattr(m, "in_features")
                  and block.rank > min(m.in_features, m.out_features)]
    if too_narrow:
        name, width = too_narrow[0]
        raise ValueError(f"rank {block.rank} exceeds the width of {len(too_narrow)} targeted layer(s), e.g. {name} "
                         f"({width} = min(in, out) features): a rank above the width adds parameters and no "
                         "expressiveness; lower lora.rank or narrow lora.targets")
    for module in (bundle.denoiser, bundle.text_encoder):
        if module is None:
            continue
        for name, param in module.named_parameters():
            param.requires_grad_(is_adapter_parameter(name))
    return sum(p.numel() for m in bundle.trainable_modules().values() for p in m.parameters() if p.requires_grad)


def lora_state_dict(bundle: ModelBundle) -> dict[str, torch.Tensor]:
    """The adapter weights, peft-named without the adapter name (`...to_q.lora_A.weight`), on CPU."""
    state = get_peft_model_state_dict(bundle.denoiser.net, adapter_name=ADAPTER)
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def merge_lora(bundle: ModelBundle) -> None:
    """W <- W + (alpha / r) B A in every adapted layer, then put the base layers back: the backbone is
    a plain diffusers model again (same state_dict keys as before attach_lora). Parameters stay frozen."""
    net = bundle.denoiser.net
    if not has_lora(bundle):
        raise ValueError("the denoiser carries no LoRA adapter to merge")
    for name, module in list(net.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            parent = net.get_submodule(parent_name) if parent_name else net
            setattr(parent, child, module.get_base_layer())
    if hasattr(net, "peft_config"):
        del net.peft_config


def _pipeline_loader(kind: str):
    """The diffusers LoRA loader mixin of the family's pipeline (the class the pipeline inherits
    save_lora_weights and lora_state_dict from); None where diffusers has none."""
    from diffusers.loaders import FluxLoraLoaderMixin, SD3LoraLoaderMixin, StableDiffusionXLLoraLoaderMixin

    return {"mmdit": SD3LoraLoaderMixin, "flux": FluxLoraLoaderMixin,
            "unet": StableDiffusionXLLoraLoaderMixin}.get(kind)


def export_lora(bundle: ModelBundle, block, folder: Path) -> Path:
    """Write `folder/lora/pytorch_lora_weights.safetensors` (diffusers pipeline format, the config as
    metadata) and `folder/lora/adapter_config.json` (peft's LoraConfig); returns the weights file."""
    if not has_lora(bundle):
        raise ValueError("the denoiser carries no LoRA adapter to export (merged already?)")
    kind = bundle.denoiser.spec.kind
    component = COMPONENT[kind]
    target = Path(folder) / "lora"
    target.mkdir(parents=True, exist_ok=True)
    # The injected config: 'all-linear' is resolved there to the module names actually adapted.
    config = bundle.denoiser.net.peft_config[ADAPTER]
    if (config.r, config.lora_alpha) != (block.rank, block.resolved_alpha()):
        raise ValueError(f"the attached adapter (r={config.r}, alpha={config.lora_alpha}) is not this lora block's")
    layers, metadata = lora_state_dict(bundle), config.to_dict()
    loader = _pipeline_loader(kind)
    if loader is not None:
        loader.save_lora_weights(str(target), weight_name=WEIGHT_NAME, **{f"{component}_lora_layers": layers,
                                 f"{component}_lora_adapter_metadata": metadata})
    else:
        from diffusers.loaders.lora_base import LoraBaseMixin

        LoraBaseMixin.write_lora_layers(
            state_dict={f"{component}.{k}": v for k, v in layers.items()}, save_directory=str(target),
            is_main_process=True, weight_name=WEIGHT_NAME, save_function=None, safe_serialization=True,
            lora_adapter_metadata={f"{component}.{k}": v for k, v in metadata.items()})
    if "comfyui" in block.formats():
        from safetensors.torch import save_file

        save_file(to_comfyui(layers, kind, config.lora_alpha), str(target / COMFY_NAME),
                  metadata={"ss_network_dim": str(config.r), "ss_network_alpha": str(config.lora_alpha)})
    config.save_pretrained(str(target))
    return target / WEIGHT_NAME


def fingerprint(bundle: ModelBundle) -> str:
    """A hash of every weight the bundle would train without LoRA (the denoiser, a builtin text encoder):
    what identifies the frozen base an adapter is trained on and may be applied to."""
    digest = hashlib.sha256()
    for name, module in sorted(bundle.trainable_modules().items()):
        for key, tensor in sorted(module.state_dict().items()):
            digest.update(f"{name}.{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def write_base(folder: Path, base: str, base_hash: str) -> None:
    """Record, beside the exported adapter, the exported model folder it was trained on and that base's hash."""
    (Path(folder) / BASE_FILE).write_text(json.dumps({"base": base, "base_hash": base_hash}, indent=2))


def read_base(folder: Path) -> dict | None:
    path = Path(folder) / BASE_FILE
    return json.loads(path.read_text()) if path.exists() else None


def apply_lora(bundle: ModelBundle, folder: Path, base_hash: str | None = None, scale: float = 1.0) -> None:
    """Merge the adapter exported in `folder/lora` into the bundle's weights (scaled by `scale`). With
    `base_hash`, the bundle must hold that base: an adapter on another base is refused with both hashes."""
    if base_hash is not None:
        found = fingerprint(bundle)
        if found != base_hash:
            raise ValueError(f"{folder}: this LoRA adapter was trained on base {base_hash}, but the weights it would "
                             f"be applied to hash to {found}")
    trains = {name: p.requires_grad for name, p in bundle.denoiser.named_parameters()}
    config = LoraConfig.from_pretrained(str(Path(folder) / "lora"))
    if scale != 1.0:
        config.lora_alpha = config.lora_alpha * scale
    inject_adapter_in_model(config, bundle.denoiser.net, adapter_name=ADAPTER)
    from safetensors.torch import load_file

    prefix = COMPONENT[bundle.denoiser.spec.kind] + "."
    state = {k[len(prefix):]: v for k, v in load_file(str(Path(folder) / "lora" / WEIGHT_NAME)).items()
             if k.startswith(prefix)}
    result = set_peft_model_state_dict(bundle.denoiser.net, state, adapter_name=ADAPTER)
    missing = [k for k in result.missing_keys if is_adapter_parameter(k)]
    if result.unexpected_keys or missing or not state:
        raise ValueError(f"{folder}: the adapter does not fit this {bundle.denoiser.spec.kind} model "
                         f"({len(missing)} adapter weights missing, {len(result.unexpected_keys)} unexpected)")
    merge_lora(bundle)
    for name, param in bundle.denoiser.named_parameters():  # peft froze the base while it held the adapter
        param.requires_grad_(trains[name])


def comfyui_prefix(kind: str) -> str:
    """kohya's prefix: `lora_unet_` for the UNet, `lora_transformer_` for transformers (ComfyUI maps both onto
    the diffusers module paths), `lora_denoiser_` for the toy MLP."""
    return {"unet": "lora_unet_", "mlp": "lora_denoiser_"}.get(kind, "lora_transformer_")


def to_comfyui(state: dict[str, torch.Tensor], kind: str, alpha: float) -> dict[str, torch.Tensor]:
    """peft names (`a.b.to_q.lora_A.weight`) -> kohya names (`lora_unet_a_b_to_q.lora_down.weight`, `.lora_up`,
    and a scalar `.alpha` per module, so the UI scales by alpha / rank as training did)."""
    out, prefix = {}, comfyui_prefix(kind)
    for key, tensor in state.items():
        module, _, part = key.rpartition(".lora_")
        name = prefix + module.replace(".", "_")
        out[f"{name}.{'lora_down' if part.startswith('A') else 'lora_up'}.weight"] = tensor
        out[f"{name}.alpha"] = torch.tensor(float(alpha))
    return out


def from_comfyui(state: dict[str, torch.Tensor], net: torch.nn.Module, kind: str) -> tuple[dict, float]:
    """kohya names back to peft names, by the module paths of `net` (underscores are ambiguous alone)."""
    prefix = comfyui_prefix(kind)
    paths = {prefix + name.replace(".", "_"): name for name, _ in net.named_modules() if name}
    out, alphas = {}, set()
    for key, tensor in state.items():
        name, _, part = key.partition(".")
        if name not in paths:
            raise ValueError(f"{key}: no module of this {kind} model is named so")
        if part == "alpha":
            alphas.add(float(tensor))
            continue
        out[f"{paths[name]}.lora_{'A' if part.startswith('lora_down') else 'B'}.weight"] = tensor
    if len(alphas) != 1:
        raise ValueError(f"expected one alpha for every module, found {sorted(alphas)}")
    return out, alphas.pop()
