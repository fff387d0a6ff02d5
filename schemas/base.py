"""The base every spec block derives from: frozen, closed to unknown keys, documented, and refusing
values that no run can use (non-finite numbers, strings too long to be a name, a path or a prompt)."""
import math
import typing
from typing import Annotated, Any, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator
from pydantic_core import PydanticCustomError

# Names become folder and file names (runs/<name>/<stage>-<hash>/): far below the 255 bytes of a file name.
NAME_MAX = 64
NAME_PATTERN = rf"^[a-z][a-z0-9_]{{0,{NAME_MAX - 1}}}$"
STR_MAX = 4096  # Linux's PATH_MAX: no name, path, prompt or template of a spec needs more
FILE_NAME_BYTES = 255  # one folder or file name, on every common file system
PATH_BYTES = 3072  # a folder the runs go in, leaving room below PATH_MAX for <name>/<stage>-<hash>/<file>


class Block(BaseModel):
    """A spec block. Unknown keys are errors (a misspelled key must never be silently ignored).

    Every float is finite (a NaN learning rate or an infinite aspect ratio only fails deep in a run)
    and every string has at most STR_MAX characters; every `name` key at most NAME_MAX.
    Validators are built once, for the whole Spec (defer_build), which keeps `flowspec validate` fast.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, defer_build=True,
                              allow_inf_nan=False, str_max_length=STR_MAX)

    # Checked before the field's own pattern, so a long name says why it is refused.
    @field_validator("name", mode="before", check_fields=False)
    @classmethod
    def _short_name(cls, name: Any) -> Any:
        if isinstance(name, str) and len(name) > NAME_MAX:
            raise PydanticCustomError("string_too_long", "string should have at most {max_length} characters "
                                      "(names become folder and file names)", {"max_length": NAME_MAX})
        return name


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
# Seeds feed numpy's and torch's generators, which take non-negative 64-bit integers.
Seed = Annotated[int, Field(ge=0, lt=2**63)]
PositiveInt = Annotated[int, Field(gt=0)]


def _plain(value: Any, where: str = "") -> None:
    """Raise for a non-finite number or a too long string anywhere inside `value` (lists and mappings)."""
    at = f" (at {where})" if where else ""
    if isinstance(value, float) and not math.isfinite(value):
        raise PydanticCustomError("finite_number", "input should be a finite number{at}", {"at": at})
    if isinstance(value, str) and len(value) > STR_MAX:
        raise PydanticCustomError("string_too_long", "string should have at most {max_length} characters{at}",
                                  {"max_length": STR_MAX, "at": at})
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        _plain(key, where)
        _plain(item, f"{where}[{key!r}]")


def _checked_plain(value: Any) -> Any:
    _plain(value)
    return value


# Values passed through without a schema (diffusers config keywords, profile values) still reach a
# number or a string somewhere: the same limits as typed fields apply.
PlainData = Annotated[Any, AfterValidator(_checked_plain)]


def _size(text: str) -> int:
    return len(text.encode("utf-8"))  # pydantic has refused lone surrogates already


def _fits_file_system(path: str) -> str:
    if "\x00" in path:
        raise PydanticCustomError("path_nul", "a path cannot contain a NUL character")
    if _size(path) > PATH_BYTES:
        raise PydanticCustomError("path_too_long", "a path should be at most {max} bytes long", {"max": PATH_BYTES})
    if max(_size(part) for part in path.split("/")) > FILE_NAME_BYTES:
        raise PydanticCustomError("file_name_too_long", "each folder or file name in a path should be at most "
                                  "{max} bytes long", {"max": FILE_NAME_BYTES})
    return path


# A path the compiler itself looks at (it checks run folders for finished stages): refused here
# rather than failing with OSError "File name too long".
LocalPath = Annotated[str, AfterValidator(_fits_file_system)]
