"""`flowspec validate` (and `plan --no-estimate`) never import torch: they run on login nodes and in CI."""
import subprocess
import sys

import pytest

HEAVY = ("torch", "diffusers", "transformers", "peft", "wandb", "submitit")
PROGRAM = """
import sys
from flowspec.cli import main
code = main({args!r})
heavy = [m for m in {heavy!r} if m in sys.modules]
print("HEAVY=" + ",".join(heavy))
sys.exit(code)
"""


@pytest.mark.parametrize("args,code", [
    (["validate", "specs/sdxl_like.yaml", "specs/sd3_like.yaml", "specs/quickstart.yaml", "specs/toy2d.yaml"], 0),
    (["plan", "specs/sdxl_like.yaml", "--no-estimate", "--json"], 0),
    (["validate", "tests/golden/many_errors.yaml"], 2),  # reporting errors imports nothing heavy either
    (["validate", "specs/toy2d.yaml", "--sweep", "optimizer.lr=1e-3,3e-3"], 0),  # every member compiled
])
def test_no_heavy_imports(args, code, root):
    proc = subprocess.run([sys.executable, "-c", PROGRAM.format(args=args, heavy=HEAVY)], cwd=root,
                          capture_output=True, text=True)
    assert "HEAVY=\n" in proc.stdout, proc.stdout + proc.stderr
    assert proc.returncode == code, proc.stderr
