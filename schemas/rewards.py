"""Rewards, prompt enhancers and frozen vision encoders used by the preference and distillation stages."""
from typing import ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator

from .base import Block, LocalPath, tagged
from .targets import TARGET_PATTERN, load_target, search_path


def importable_function(target: str, info: ValidationInfo, arguments: str) -> str:
    """A plugin's 'package.module:function' imports (beside the spec, then the working directory) and is callable."""
    context = info.context or {}
    if context.get("import_targets", True):
        function = load_target(target, search_path(context.get("spec_dir")))
        if not callable(function):
            raise ValueError(f"'{target}' is not a function of {arguments}: it is {type(function).__name__}")
    return target


# -------------------------------------------------------------------------------------- rewards
class ShapesChecker(Block):
    differentiable: ClassVar[bool] = False
    kind: Literal["shapes_checker"] = Field("shapes_checker", description="Embedded procedural checker: count, colour, shape, position "
                                            "of a generated image against its caption (GenEval-like, not differentiable). "
                                            "The reward is the fraction of the caption's checks passed: 1 exactly when "
                                            "the checker accepts the image.")


class ShapesColor(Block):
    differentiable: ClassVar[bool] = True
    kind: Literal["shapes_color"] = Field("shapes_color", description="Differentiable soft agreement of the image's colours with the caption's.")
    temperature: float = Field(0.1, gt=0, description="Softness of the colour assignment.")


class JpegCompressibility(Block):
    differentiable: ClassVar[bool] = False
    kind: Literal["jpeg_compressibility"] = Field("jpeg_compressibility", description="DDPO's classic: minus the "
                                                  "image's JPEG size in kB (smaller files score higher).")
    quality: int = Field(95, ge=1, le=100, description="JPEG quality of the encoding.")


class JpegIncompressibility(Block):
    differentiable: ClassVar[bool] = False
    kind: Literal["jpeg_incompressibility"] = Field("jpeg_incompressibility", description="DDPO's classic: the image's "
                                                    "JPEG size in kB (larger files score higher).")
    quality: int = Field(95, ge=1, le=100, description="JPEG quality of the encoding.")


class Toy2DRegion(Block):
    differentiable: ClassVar[bool] = True
    kind: Literal["toy2d_region"] = Field("toy2d_region", description="For 2-D points: minus the distance to a target "
                                          "set, the union of discs (0 inside); differentiable, for fast exact checks.")
    centers: list[tuple[float, float]] = Field(min_length=1, description="Centres of the target discs.")
    radius: float = Field(0.5, ge=0, description="Radius of every disc.")


class ClipScore(Block):
    differentiable: ClassVar[bool] = True
    kind: Literal["clip_score"] = Field("clip_score", description="CLIP image-text similarity from a local CLIP folder (differentiable).")
    path: LocalPath = Field(description="Local transformers CLIPModel folder.")


class ModuleReward(Block):
    kind: Literal["module"] = Field("module", description="A user function 'package.module:function'(items, prompts) -> "
                                    "one float per item: items are images (N, 3, H, W) in [-1, 1] or 2-D points (N, 2).")
    target: str = Field(pattern=TARGET_PATTERN, description="Import path 'package.module:function' (looked up beside "
                        "the spec file, then in the working directory, then on the import path).")
    differentiable: bool = Field(False, description="Whether gradients flow from the reward to the images.")

    @field_validator("target")
    @classmethod
    def _importable(cls, target: str, info: ValidationInfo) -> str:
        return importable_function(target, info, "(items, prompts)")


Reward = tagged(ShapesChecker, ShapesColor, JpegCompressibility, JpegIncompressibility, Toy2DRegion, ClipScore,
                ModuleReward)


def is_differentiable(reward) -> bool:
    return bool(reward.differentiable)


# ------------------------------------------------------------------------------ prompt enhancers
class IdentityEnhancer(Block):
    kind: Literal["identity"] = Field("identity", description="Prompts pass unchanged.")


class TemplateEnhancer(Block):
    kind: Literal["template"] = Field("template", description="A jinja2 template of the prompt, e.g. '{{ prompt }}, centred, high contrast'.")
    template: str = Field(description="jinja2 template; variables: prompt, seed.")


class VocabularyEnhancer(Block):
    kind: Literal["vocabulary"] = Field("vocabulary", description="Rewrites a short prompt into the caption style of "
                                        "the training data: a caption of the stage's data holding every word of the "
                                        "prompt, drawn by (prompt, seed); e.g. 'a circle' -> 'a small red circle at "
                                        "the top left'. A prompt no caption covers passes unchanged.")
    captions: int = Field(2000, gt=0, description="How many of the data's captions (in the order it feeds them) it "
                          "learns the style from.")


class ModuleEnhancer(Block):
    kind: Literal["module"] = Field("module", description="A user function 'package.module:function'(prompt, seed) -> prompt.")
    target: str = Field(pattern=TARGET_PATTERN, description="Import path 'package.module:function' (looked up beside "
                        "the spec file, then in the working directory, then on the import path).")

    @field_validator("target")
    @classmethod
    def _importable(cls, target: str, info: ValidationInfo) -> str:
        return importable_function(target, info, "(prompt, seed)")


PromptEnhancer = tagged(IdentityEnhancer, TemplateEnhancer, VocabularyEnhancer, ModuleEnhancer)


# ------------------------------------------------------------------------------ vision encoders
class EfficientNetLite0(Block):
    kind: Literal["efficientnet_lite0"] = Field("efficientnet_lite0", description="ImageNet EfficientNet-lite0 from a PyPI wheel (offline), 1280-d features.")


class DINOv2(Block):
    kind: Literal["dinov2"] = Field("dinov2", description="DINOv2 ViT from a local transformers folder (patch tokens, layer-normed).")
    path: LocalPath = Field(description="Local folder of a transformers Dinov2Model.")


class HFVision(Block):
    kind: Literal["hf_vision"] = Field("hf_vision", description="Any transformers vision model from a local folder (last hidden state).")
    path: LocalPath = Field(description="Local folder of the model.")


VisionEncoder = tagged(EfficientNetLite0, DINOv2, HFVision, default="efficientnet_lite0")
