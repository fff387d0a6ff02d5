"""specs/lifecycle.yaml's smoke profile runs the quick start's life cycle to its distilled student on a CPU:
the student's report compares it with the teacher on the same captions and seeds."""
import json
import shutil

import pytest

from .helpers import flowspec, stage_dir

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


@pytest.mark.slow  # three stages of the quick-start UNet (about a minute): with the slow tests
def test_the_life_cycle_smoke_profile_ends_in_a_reported_four_step_student(tmp_path):
    shutil.copy(ROOT / "specs/lifecycle.yaml", tmp_path / "spec.yaml")
    out = flowspec("run", "spec.yaml", "--profile", "smoke", "--yes", cwd=tmp_path, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report = json.loads((stage_dir(tmp_path, "quickstart", "lcm") / "distill_report.json").read_text())
    students = {r["steps"]: r for r in report["rows"] if r["model"] == "student"}
    teachers = {r["steps"]: r for r in report["rows"] if r["model"] == "teacher"}
    assert set(students) == {1, 2, 4} and set(teachers) == {4, 8, 20}
    assert students[4]["nfe"] == 4 and teachers[20]["nfe"] == 40  # the teacher guided (CFG 3), the student not
    assert {r["solver"] for r in students.values()} == {"consistency"}
    assert all("checker_accuracy" in r and "frechet_effnet" in r for r in report["rows"])
