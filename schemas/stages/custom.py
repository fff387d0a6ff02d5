"""`kind: custom`: a stage kind of the user's own, without forking flowspec.

    - name: weighted
      kind: custom
      target: weighted_fm:WeightedFlowMatching   # a class, looked up beside the spec file first
      options: {power: 2.0}                      # validated by WeightedFlowMatching.Options

The target is an objective class on flowspec's shared training loop (runtime/objectives/base.py:
Objective): checkpoints, exact resume, EMA, logging, data parallelism and SLURM come with the loop.
Its `Options` attribute, a pydantic model that forbids unknown keys, validates `options` here, so a
wrong option is a positioned error like any other key.
"""
from __future__ import annotations

import difflib
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from ..targets import TARGET_PATTERN, load_target, search_path
from ..base import PlainData
from .base import StageBase


def _target_class(target: str, info: ValidationInfo) -> type:
    context = info.context or {}
    cls = load_target(target, search_path(context.get("spec_dir")))
    if not isinstance(cls, type):
        raise ValueError(f"'{target}' is a {type(cls).__name__}, not a class: custom stages name an objective class")
    options = getattr(cls, "Options", None)
    if options is not None and not (isinstance(options, type) and issubclass(options, BaseModel)):
        raise ValueError(f"{target}.Options must be a pydantic model (a BaseModel subclass)")
    if options is not None and options.model_config.get("extra") != "forbid":
        raise ValueError(f"{target}.Options must refuse unknown keys, or a misspelled option would be ignored: "
                         "give it model_config = ConfigDict(extra='forbid')")
    return cls


def _options_errors(model: type[BaseModel], exc: ValidationError) -> list[InitErrorDetails]:
    """The user model's errors, unknown keys with a did-you-mean among its fields."""
    fields = list(model.model_fields)
    details: list[InitErrorDetails] = []
    for error in exc.errors():
        if error["type"] == "extra_forbidden":
            key = str(error["loc"][-1])
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" ({model.__name__} takes: {', '.join(fields) or 'none'})"
            details.append({"type": PydanticCustomError("unknown_option", "unknown option '{key}'{hint}",
                                                        {"key": key, "hint": hint}),
                            "loc": error["loc"], "input": error["input"]})
        else:
            details.append({"type": PydanticCustomError("option_error", error["msg"]), "loc": error["loc"],
                            "input": error.get("input")})
    return details


class Custom(StageBase):
    """Your own objective class (`target`) on the shared training loop: options validated by its Options model,
    data, checkpoints, resume, sampling, evaluation and export as for the built-in kinds."""

    kind: Literal["custom"] = Field("custom", description="Your own stage kind: an objective class on the shared loop.")
    target: str = Field(pattern=TARGET_PATTERN, description="The objective class, 'package.module:Name' (looked up "
                        "beside the spec file, then in the working directory, then on the import path).")
    options: dict[str, PlainData] = Field(default_factory=dict, description="Options of your stage, validated by the "
                                    "target's `Options` pydantic model.")

    @field_validator("target")
    @classmethod
    def _importable(cls, target: str, info: ValidationInfo) -> str:
        if (info.context or {}).get("import_targets", True):
            _target_class(target, info)
        return target

    @field_validator("options")
    @classmethod
    def _valid_options(cls, options: dict, info: ValidationInfo) -> dict:
        context = info.context or {}
        if "target" not in info.data or not context.get("import_targets", True):
            return options  # the target's own error is reported
        model = getattr(_target_class(info.data["target"], info), "Options", None)
        if model is None:
            if options:
                raise ValueError(f"{info.data['target']} takes no options (it has no Options model)")
            return options
        try:
            model.model_validate(options)
        except ValidationError as exc:
            raise ValidationError.from_exception_data(model.__name__, _options_errors(model, exc)) from None
        return options

    def objective_name(self) -> str:
        return self.target

    def objective_options(self) -> Any:
        return self.options
