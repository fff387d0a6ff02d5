"""MEASURE (measuring.py) generates the same examples whatever was imported before: the cause of the
order-dependent coverage test of issue 10, checked in a fresh interpreter so that no constant leaks
into the other tests of this process."""
import json
import subprocess
import sys

from .. import conftest

# Draws examples, imports a module full of integer constants, draws again: once under MEASURE, once
# under Hypothesis's default backend (the control: the import must matter there, or this proves nothing).
SCRIPT = """
import importlib, json, sys
from hypothesis import given, settings, strategies as st
from tests.properties.measuring import MEASURE

def examples(how):
    seen = []

    @settings(how, max_examples=40)
    @given(st.lists(st.integers(0, 1000), min_size=1, max_size=3))
    def collect(values):
        seen.append(values)

    collect()
    return seen

default = settings(derandomize=True, database=None)
before = {"measure": examples(MEASURE), "default": examples(default)}
sys.path.insert(0, sys.argv[1])
importlib.import_module("lots_of_constants")
print(json.dumps({name: before[name] == examples(how) for name, how in [("measure", MEASURE), ("default", default)]}))
"""


def test_measured_examples_do_not_depend_on_the_modules_imported_before(tmp_path):
    (tmp_path / "lots_of_constants.py").write_text(f"VALUES = {list(range(1, 1000, 7))}\n")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=conftest.ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    same = json.loads(proc.stdout.strip().splitlines()[-1])
    assert same == {"measure": True, "default": False}
