"""Values no run can use, written over one scalar of a generated spec that compiles: the compiler
refuses them with a SpecError positioned at that scalar, and never raises anything else (issue 10:
random mutations raised ValueError / OverflowError on a NaN or infinite aspect ratio, and OSError
"File name too long" on a 5000-character name)."""
import json
from pathlib import Path

from hypothesis import given, settings, strategies as st

from flowspec.compiler.errors import Location
from flowspec.compiler.locate import locate
from flowspec.compiler.yamlpos import load_file
from flowspec.schemas.base import NAME_MAX

from ..spec_fixups import specs
from ..hostile_values import NON_FINITE_YAML, huge_text, long_name, odd_text, scalar_leaves, set_in
from .test_generated_specs import compile_or_error, compiled, write

EXAMPLES = settings.default.max_examples
MARK = "hostile-value-here"  # a plain YAML scalar, replaced in the file by the spelling under test
FINITE = "input should be a finite number"
LONG_NAME = f"string should have at most {NAME_MAX} characters (names become folder and file names)"
VERSION = ("flowspec",)  # a Literal: its refusal reads "'nan' is not one of ..." (validate.py)


def numbers(document) -> list[tuple]:
    return [p for p, v in scalar_leaves(document) if isinstance(v, (int, float)) and not isinstance(v, bool)]


def strings(document) -> list[tuple[tuple, str]]:
    return [(p, v) for p, v in scalar_leaves(document) if isinstance(v, str)]


def names(document) -> list[tuple[tuple, str]]:
    """The `name` keys: the spec's, each stage's, each mixture component's."""
    return [(p, v) for p, v in strings(document) if p[-1] == "name"]


def where(file: Path, path: tuple) -> Location:
    """Where the scalar at `path` is written, as the compiler's YAML reader positions it."""
    return locate(load_file(str(file)), path, Location(str(file)), at_key=False)


def refusals_at(file: Path, path: tuple) -> list[str]:
    """The messages of the issues at the scalar (compiling must fail with a SpecError). An item of a
    list that is one member of a plain union (lora.targets: a list or 'all-linear') is reported at
    its list: pydantic's loc names the union member there, which the compiler does not map further."""
    plan, error = compile_or_error(file)
    assert plan is None, f"{path} compiled"
    at = {where(file, path), where(file, path[:-1]) if isinstance(path[-1], int) else None}
    return [i.message for i in error.issues if i.loc in at]


def written_verbatim(tmp_path_factory, document, path: tuple, spelling: str) -> Path:
    """The document as YAML with `spelling` written as is at `path` (not as the dumper would quote it)."""
    set_in(document, path, MARK)
    file = write(tmp_path_factory, document)
    file.write_text(file.read_text().replace(MARK, spelling))
    return file


@given(specs(), st.data())
@settings(max_examples=EXAMPLES)
def test_a_non_finite_number_is_refused_where_it_is_written(tmp_path_factory, document, data):
    compiled(tmp_path_factory, document)
    path = data.draw(st.sampled_from(numbers(document)), label="path")
    spelling = data.draw(st.sampled_from(NON_FINITE_YAML), label="spelling")
    messages = refusals_at(written_verbatim(tmp_path_factory, document, path, spelling), path)
    assert messages, path
    # an item of a list of numbers (axes_dims_rope) is refused at its list, naming the item: '... (at [0])'
    assert path == VERSION or any(m.startswith(FINITE) for m in messages), (path, messages)


@given(specs(), st.data())
@settings(max_examples=EXAMPLES)
def test_a_string_of_thousands_of_characters_is_refused_where_it_is_written(tmp_path_factory, document, data):
    compiled(tmp_path_factory, document)
    path, value = data.draw(st.sampled_from(strings(document)), label="path")
    set_in(document, path, data.draw(huge_text(like=value)))
    assert refusals_at(write(tmp_path_factory, document), path), path


@given(specs(), st.data())
@settings(max_examples=EXAMPLES)
def test_a_name_too_long_for_a_file_name_is_refused_where_it_is_written(tmp_path_factory, document, data):
    compiled(tmp_path_factory, document)
    path, value = data.draw(st.sampled_from(names(document)), label="path")
    set_in(document, path, data.draw(long_name(like=value)))
    messages = refusals_at(write(tmp_path_factory, document), path)
    assert LONG_NAME in messages, (path, messages)


@given(specs(), st.data())
@settings(max_examples=EXAMPLES)
def test_odd_text_anywhere_compiles_or_is_a_positioned_spec_error(tmp_path_factory, document, data):
    """Unicode in names, paths, prompts, kinds...: any outcome but an exception other than SpecError."""
    path, _ = data.draw(st.sampled_from(strings(document)), label="path")
    set_in(document, path, data.draw(odd_text()))
    file = write(tmp_path_factory, document)
    plan, _ = compile_or_error(file)
    if plan is not None:
        assert plan.as_text()
        json.dumps(plan.to_json())
