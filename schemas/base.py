"""The base every spec block derives from: frozen, closed to unknown keys, documented."""
import typing
from typing import Annotated, Any, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

NAME_PATTERN = r"^[a-z][a-z0-9_]*$"


class Block(BaseModel):
    """A spec block. Unknown keys are errors (a misspelled key must never be silently ignored).

    Validators are built once, for the whole Spec (defer_build), which keeps `flowspec validate` fast.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, defer_build=True)


def kind_tag(model: type[BaseModel]) -> str:
    return typing.get_args(model.model_fields["kind"].annotation)[0]


# Blocks that must spell out their kind (members of unions without a default), for the JSON Schema.
KIND_REQUIRED: set[str] = set()


def tagged(*members: type[BaseModel], default: str | None = None) -> Any:
    """A union of blocks told apart by their `kind` key; with a default, a block without `kind` is that kind."""
    tags = [kind_tag(m) for m in members]
    assert default is None or default in tags, (default, tags)
    if default is None:
        KIND_REQUIRED.update(m.__name__ for m in members)

    def tag_of(value: Any) -> str | None:
        if isinstance(value, dict):
            return value.get("kind", default)
        return getattr(value, "kind", default)

    union = Union[tuple(Annotated[m, Tag(t)] for m, t in zip(members, tags))]  # type: ignore[valid-type]
    return Annotated[union, Discriminator(tag_of)]


def defaults(**values: Any) -> Any:
    """A field default given as data and validated like user input (no model is built at import)."""
    return Field(default_factory=lambda: dict(values), validate_default=True)


Probability = Annotated[float, Field(ge=0.0, le=1.0)]
PositiveInt = Annotated[int, Field(gt=0)]
