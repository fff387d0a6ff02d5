"""Golden bad specs: each file ends with the exact errors (line:col: path: message) it must produce."""
from pathlib import Path

import pytest

from flowspec.compiler import SpecError, compile_spec

from .conftest import run_cli

GOLDEN = sorted((Path(__file__).parent / "golden").glob("*.yaml"))

# One golden file per error class the compiler promises to report.
ERROR_CLASSES = {
    "yaml_syntax", "duplicate_key", "unknown_tag", "unknown_key", "bad_kind", "missing_key", "wrong_type",
    "bad_preset", "unknown_from", "later_from", "self_reference", "duplicate_name", "needs_start",
    "resolution_multiple", "curriculum_order", "pos_embed", "repa_depth", "refl_reward", "batch_arithmetic",
    "grpo_groups", "lora_target", "dit_square", "slurm_signal", "text_width", "latent_channels", "data_model", "toy_shift",
    "mixture_lengths", "warmup", "template_syntax", "newer_version", "profile_key", "many_errors",
    "webdataset_mixture", "enhancer_unused", "union_member",
    "non_finite", "multinode_batch", "offload_frozen",
}


def expectations(path: Path) -> tuple[str | None, list[str]]:
    lines = path.read_text().splitlines()
    profile = next((l.removeprefix("# profile: ") for l in lines if l.startswith("# profile: ")), None)
    return profile, [l.removeprefix("# expect: ") for l in lines if l.startswith("# expect: ")]


def test_every_error_class_has_a_golden_spec():
    assert {p.stem for p in GOLDEN} == ERROR_CLASSES


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_golden_spec_reports_exactly_its_errors(path):
    profile, expected = expectations(path)
    assert expected, f"{path.name} has no '# expect:' lines"
    with pytest.raises(SpecError) as info:
        compile_spec(str(path), profile)
    issues = info.value.issues
    assert [str(i).replace(f"{path}:", "", 1) for i in issues] == expected
    assert all(i.loc.file == str(path) and i.loc.line is not None for i in issues)


@pytest.mark.parametrize("stem", ["unknown_key", "yaml_syntax", "lora_target"])
def test_cli_reports_golden_errors_without_traceback(stem, root):
    path = f"tests/golden/{stem}.yaml"
    code, out, err = run_cli("validate", path, cwd=root)
    assert code == 2
    assert "Traceback" not in err
    _, expected = expectations(root / path)
    for line in expected:
        assert f"{path}:{line}" in err
