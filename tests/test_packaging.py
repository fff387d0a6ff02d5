"""The design card's layout: top-level schemas/, compiler/, runtime/ are flowspec subpackages."""
import importlib
import tomllib

from .conftest import ROOT


def package_dirs() -> set[str]:
    mapping = {"flowspec": "flowspec", "schemas": "flowspec.schemas", "compiler": "flowspec.compiler",
               "runtime": "flowspec.runtime"}
    found = set()
    for top, name in mapping.items():
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top)
            found.add(".".join([name, *rel.parts]) if rel.parts else name)
    return found


def test_every_package_folder_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(config["packages"]) == package_dirs()


def test_subpackages_import_under_the_flowspec_name():
    for name in sorted(package_dirs()):
        module = importlib.import_module(name)
        assert module.__name__ == name


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    lines = (ROOT / ".ci/run").read_text().strip().splitlines()
    ci = next(line for line in lines if line.startswith("python3 -m venv"))
    assert ci.endswith("pytest -q") and f"\n{ci}\n" in readme
    # then what the default run leaves out, but for the variants marked extended
    assert lines[-1] == "pytest -q -m 'slow and not extended'" and "`pytest -q -m 'slow and not extended'`" in readme
