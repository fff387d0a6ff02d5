"""`flowspec validate --format github | json`, the pre-commit hook (.pre-commit-hooks.yaml) and the CI example
(examples/ci/) on a spec with errors."""
import json
import os
import re
import shutil
import subprocess
import sys

import yaml

from flowspec.compiler.errors import Issue, Location, annotation

from .conftest import run_cli

BAD = """\
flowspec: 1
name: bad
model: {kind: mlp, preset: tiny}
data:
  source: {kind: toy2d, distribution: {kind: gaussian_mixture, means: [[-1, 0], [1, 0]], stds: [0.2, 0.2]}}
train: {global_batch: 32, ema: {decay: 1.5}}
stages:
  - {name: pretrain, kind: pretrain, steps: 10, optimizer: {lrr: 1.0e-3}}
"""
TEXT = re.compile(r"^(.+):(\d+):(\d+): ([\w.]+): (.*)$")
GITHUB = re.compile(r"^::error file=(.+),line=(\d+),col=(\d+),title=flowspec ([\w.]+)::(.*)$")


def specs(folder, root):
    (folder / "specs").mkdir(parents=True)
    (folder / "specs" / "bad.yaml").write_text(BAD)
    shutil.copy(root / "specs" / "toy2d.yaml", folder / "specs" / "good.yaml")
    return "specs/bad.yaml", "specs/good.yaml"


def text_issues(folder, path) -> list[tuple]:
    code, _, err = run_cli("validate", path, cwd=folder)
    assert code == 2
    found = [TEXT.match(line).groups() for line in err.splitlines() if TEXT.match(line)]
    assert len(found) == 2
    return found


def test_github_annotations_put_the_text_errors_at_their_file_line_and_column(tmp_path, root):
    bad, good = specs(tmp_path, root)
    code, out, _ = run_cli("validate", bad, good, "--format", "github", cwd=tmp_path)
    assert code == 2
    found = [GITHUB.match(line).groups() for line in out.splitlines() if line.startswith("::")]
    assert found == text_issues(tmp_path, bad)
    assert "ok   specs/good.yaml" in out


def test_json_holds_every_spec_and_profile_with_its_issues_in_place(tmp_path, root):
    bad, good = specs(tmp_path, root)
    code, out, _ = run_cli("validate", bad, good, "--format", "json", cwd=tmp_path)
    report = json.loads(out)
    assert code == 2 and report["ok"] is False
    failed = [r for r in report["results"] if not r["ok"]]
    assert [(r["spec"], r["stages"]) for r in failed] == [(bad, None)]
    issues = [(i["file"], str(i["line"]), str(i["col"]), i["key"], i["message"]) for i in failed[0]["issues"]]
    assert issues == text_issues(tmp_path, bad)
    passed = [(r["spec"], r["profile"]) for r in report["results"] if r["ok"]]
    profiles = yaml.safe_load((tmp_path / good).read_text()).get("profiles") or {}
    assert passed == [(good, None), *((good, p) for p in profiles)]


def test_an_annotation_escapes_what_github_reads_as_syntax():
    issue = Issue(Location("a,b:c.yaml", 3, 7), "train.x", "50% off\nnext line", severity="warning")
    assert annotation(issue) == "::warning file=a%2Cb%3Ac.yaml,line=3,col=7,title=flowspec train.x::50%25 off%0Anext line"
    flag = Issue(Location("--set train.x=1"), "train.x", "bad")  # from the command line: no file to annotate
    assert annotation(flag) == "::error title=flowspec train.x::bad"


def pre_commit(folder, root, hook, *files):
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
           "PRE_COMMIT_HOME": str(folder / ".cache"), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run([sys.executable, "-m", "pre_commit", "try-repo", str(root), hook, "--files", *files],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=300)


def test_the_pre_commit_hook_stops_a_commit_of_a_spec_with_errors(tmp_path, root):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    bad, good = specs(tmp_path, root)
    out = pre_commit(tmp_path, root, "flowspec-validate", bad, good)
    assert out.returncode == 1 and "flowspec validate" in out.stdout and "Failed" in out.stdout, out.stdout + out.stderr
    for place in text_issues(tmp_path, bad):
        assert ":".join(place[:3]) + f": {place[3]}: {place[4]}" in out.stdout
    passed = pre_commit(tmp_path, root, "flowspec-validate", good)
    assert passed.returncode == 0 and "Passed" in passed.stdout, passed.stdout + passed.stderr


def test_the_ci_examples_use_the_hook_and_the_annotations(tmp_path, root):
    hooks = {h["id"] for h in yaml.safe_load((root / ".pre-commit-hooks.yaml").read_text())}
    config = yaml.safe_load((root / "examples" / "ci" / "pre-commit-config.yml").read_text())
    assert {h["id"] for repo in config["repos"] for h in repo["hooks"]} <= hooks
    workflow = yaml.safe_load((root / "examples" / "ci" / "validate-specs.yml").read_text())
    command = next(s["run"] for s in workflow["jobs"]["validate"]["steps"] if s.get("run", "").startswith("flowspec"))
    specs(tmp_path, root)
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    out = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 2 and re.search(r"^::error file=specs/bad.yaml,line=6,col=\d+,", out.stdout, re.M)
