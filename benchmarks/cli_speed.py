"""Wall time of `flowspec validate` and `flowspec plan` on a spec, as a user runs them (fresh processes).

    python benchmarks/cli_speed.py [SPEC] [--runs N]

Goal (issue 2): validate specs/sdxl_like.yaml (the spec and its smoke profile) under 0.3 s on a
2-core development machine.
"""
import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The console script pip installed next to this interpreter: what users type.
FLOWSPEC = str(Path(sys.executable).with_name("flowspec"))


def wall(args: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run([FLOWSPEC, *args], cwd=ROOT, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if proc.returncode:
            sys.exit(f"flowspec {' '.join(args)} failed:\n{proc.stderr}")
    return times


def report(label: str, times: list[float]) -> None:
    print(f"{label:<48} median {statistics.median(times):.3f} s  min {min(times):.3f} s  ({len(times)} runs)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("spec", nargs="?", default="specs/sdxl_like.yaml")
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    wall(["validate", args.spec], 1)  # warm the bytecode cache, as on any second use
    report(f"flowspec validate {args.spec}", wall(["validate", args.spec], args.runs))
    report(f"flowspec plan {args.spec} --no-estimate", wall(["plan", args.spec, "--no-estimate"], args.runs))
    report(f"flowspec plan {args.spec}", wall(["plan", args.spec], max(3, args.runs // 3)))
    report("python -c pass (interpreter start)", [_python_start() for _ in range(args.runs)])


def _python_start() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
