"""Rewards, prompt enhancers and frozen vision encoders used by the preference and distillation stages."""
from typing import ClassVar, Literal

from pydantic import Field

from .base import Block, LocalPath, tagged

TARGET_PATTERN = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"


# -------------------------------------------------------------------------------------- rewards
class ShapesChecker(Block):
    differentiable: ClassVar[bool] = False
    kind: Literal["shapes_checker"] = Field("shapes_checker", description="Embedded procedural checker: count, colour, shape, position "
                                            "of a generated image against its caption (GenEval-like, not differentiable).")


class ShapesColor(Block):
    differentiable: ClassVar[bool] = True
    kind: Literal["shapes_color"] = Field("shapes_color", description="Differentiable soft agreement of the image's colours with the caption's.")
    temperature: float = Field(0.1, gt=0, description="Softness of the colour assignment.")


class ClipScore(Block):
    differentiable: ClassVar[bool] = True
    kind: Literal["clip_score"] = Field("clip_score", description="CLIP image-text similarity from a local CLIP folder (differentiable).")
    path: LocalPath = Field(description="Local transformers CLIPModel folder.")


class ModuleReward(Block):
    kind: Literal["module"] = Field("module", description="A user function 'package.module:function'(images, prompts) -> rewards.")
    target: str = Field(pattern=TARGET_PATTERN, description="Import path 'package.module:function'.")
    differentiable: bool = Field(False, description="Whether gradients flow from the reward to the images.")


Reward = tagged(ShapesChecker, ShapesColor, ClipScore, ModuleReward)


def is_differentiable(reward) -> bool:
    return bool(reward.differentiable)


# ------------------------------------------------------------------------------ prompt enhancers
class IdentityEnhancer(Block):
    kind: Literal["identity"] = Field("identity", description="Prompts pass unchanged.")


class TemplateEnhancer(Block):
    kind: Literal["template"] = Field("template", description="A jinja2 template of the prompt, e.g. '{{ prompt }}, centred, high contrast'.")
    template: str = Field(description="jinja2 template; variables: prompt, seed.")


class ModuleEnhancer(Block):
    kind: Literal["module"] = Field("module", description="A user function 'package.module:function'(prompt, seed) -> prompt.")
    target: str = Field(pattern=TARGET_PATTERN, description="Import path 'package.module:function'.")


PromptEnhancer = tagged(IdentityEnhancer, TemplateEnhancer, ModuleEnhancer)


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
