"""`flowspec run --nproc 2` against one process with the same global batch: the largest difference in
the final weights (and in the logged losses), on the shipped specs' smoke profiles.

    python benchmarks/nproc_parity.py [--spec specs/toy2d.yaml --spec specs/quickstart.yaml]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent


def final_weights(run: Path) -> dict:
    stage = sorted(run.glob("*/DONE"))[-1].parent
    return {f"{p.parent.name}/{k}": v for p in sorted((stage / "model").rglob("*.safetensors"))
            for k, v in load_file(str(p)).items()}


def losses(run: Path) -> list[float]:
    stage = sorted(run.glob("*/DONE"))[-1].parent
    return [json.loads(line)["loss"] for line in (stage / "metrics.jsonl").read_text().splitlines()]


def run(spec: Path, nproc: int, folder: Path) -> Path:
    shutil.copy(spec, folder / spec.name)
    out = subprocess.run([sys.executable, "-m", "flowspec.cli", "run", spec.name, "--profile", "smoke",
                          "--nproc", str(nproc)], cwd=folder, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr)
    return next((folder / "runs").iterdir())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", action="append", type=Path)
    specs = parser.parse_args().spec or [ROOT / "specs/toy2d.yaml", ROOT / "specs/quickstart.yaml"]
    for spec in specs:
        with tempfile.TemporaryDirectory() as one, tempfile.TemporaryDirectory() as two:
            a, b = run(spec, 1, Path(one)), run(spec, 2, Path(two))
            wa, wb = final_weights(a), final_weights(b)
            worst = max((wa[k].double() - wb[k].double()).abs().max().item() for k in wa)
            scale = max(wa[k].abs().max().item() for k in wa)
            la, lb = losses(a), losses(b)
            loss_gap = max(abs(x - y) for x, y in zip(la, lb))
            print(f"{spec.name} (smoke, last stage): max |w_1proc - w_2proc| = {worst:.2e} (largest weight "
                  f"{scale:.2f}); max logged-loss difference {loss_gap:.2e} over {len(la)} records")
    return 0


if __name__ == "__main__":
    sys.exit(main())
