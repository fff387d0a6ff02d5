"""`flowspec report`: the run page from a hand-made run folder (which stages, every section, images that
decode), the sweep page's table and links, and the one-line errors for folders that hold no run."""
import base64
import io
import re

from PIL import Image

from flowspec.cli import main
from flowspec.runtime.report.collect import latest_stages
from flowspec.runtime.report.page import markdown

from .runs import LCM, PRETRAIN, PRETRAIN_OLD, SFT, make_run, make_sweep

IMG = re.compile(r'<img src="([^"]*)" alt="([^"]*)"')


def images(page: str) -> dict[str, tuple[int, int]]:
    """alt text -> size of every image of the page, each decoded from its data URI."""
    found = {}
    for src, alt in IMG.findall(page):
        assert src.startswith("data:image/png;base64,"), src[:60]
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as im:
            found.setdefault(alt, im.size)
    return found


def test_latest_run_follows_the_hashes_each_stage_read(tmp_path):
    run = make_run(tmp_path)
    latest, others = latest_stages(run)
    assert [p.name for p in latest] == [f"pretrain-{PRETRAIN[:12]}", f"sft-{SFT[:12]}", f"lcm-{LCM[:12]}"]
    assert [p.name for p in others] == [f"pretrain-{PRETRAIN_OLD[:12]}"]


def test_run_report_has_every_section_and_inline_images(tmp_path, capsys):
    run = make_run(tmp_path)
    assert main(["report", str(run)]) == 0
    out = run / "report.html"
    assert capsys.readouterr().out.strip() == str(out)
    page = out.read_text()
    for stage in ("pretrain", "sft", "lcm"):
        assert f'<h2 id="{stage}">' in page
    assert "<h2>Plan</h2>" in page and "consistency_distill" in page and "from: sft (ddddeeeeffff)" in page
    assert "Not covered" in page and f"pretrain-{PRETRAIN_OLD[:12]}" in page  # said, and left out of the plan
    assert page.count(f"pretrain-{PRETRAIN_OLD[:12]}") == 1
    assert "<h2>Timings</h2>" in page and "37.5" in page  # three stages of 12.5 s
    assert "<td>student</td><td>4</td><td>4</td><td>0.641</td>" in page  # distill_report.md as a table
    assert "sliced_wasserstein" in page and "data_floor.sliced_wasserstein" in page
    assert "&quot;consistency_distill&quot;" in page  # the resolved spec, escaped
    found = images(page)
    assert {"training loss, every stage", "loss", "grad_norm", "step 20", "step 40", "eval_scatter.png"} <= set(found)
    assert all(w > 0 and h > 0 for w, h in found.values())
    # the overview; per stage the loss, 2 sample grids, a scatter; pretrain's grad norm (the others' stay put)
    assert page.count("<img") == 1 + 3 * (1 + 2 + 1) + 1
    assert "<script" not in page and '="http' not in page  # nothing to run, nothing to fetch


def test_report_out_and_the_spec_that_made_the_run(tmp_path, capsys, root):
    run = make_run(tmp_path)
    target = tmp_path / "elsewhere" / "page.html"
    assert main(["report", str(run), "--out", str(target)]) == 0
    assert target.exists() and not (run / "report.html").exists()
    href = re.search(r'<a href="([^"]*)">sft-', target.read_text()).group(1)
    assert (target.parent / href).resolve() == (run / f"sft-{SFT[:12]}").resolve()  # links work from where it is
    spec = tmp_path / "spec.yaml"
    toy2d = (root / "specs" / "toy2d.yaml").read_text()
    spec.write_text(toy2d.replace("name: toy2d", f"name: toy\noutput_dir: {tmp_path}"))
    assert main(["report", str(spec)]) == 0
    assert (run / "report.html").exists()


def test_sweep_report_compares_the_runs_and_links_their_reports(tmp_path):
    sweep = make_sweep(tmp_path)
    assert main(["report", str(sweep)]) == 0
    page = (sweep / "report.html").read_text()
    rows = re.findall(r"<tr>(.*?)</tr>", page.split("<h2>Runs</h2>")[1])
    assert len(rows) == 1 + 3
    for name in ("toy-lr1", "toy-lr2"):
        assert (tmp_path / name / "report.html").exists()
        assert f'<a href="../{name}/report.html">{name}</a>' in page
    assert "no stages in" in rows[3] and "missing" in rows[3]
    assert "pretrain: final loss" in rows[0] and "lcm: sliced_wasserstein" in rows[0]
    assert "<td>1e-3</td>" in rows[1] and "<td>3e-3</td>" in rows[2]
    assert ">0.25<" in rows[1] and ">0.125<" in rows[2]  # each run's own evaluation
    assert set(images(page)) == {f"{stage}: loss of each run" for stage in ("pretrain", "sft", "lcm")}


def test_folders_without_a_run_are_one_line_user_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "notes-1.txt").write_text("x")
    (tmp_path / "bad-sweep").mkdir()
    (tmp_path / "bad-sweep" / "sweep.json").write_text("{not json")
    for folder, says in (("missing", "does not exist"), ("empty", "holds no stage folders"),
                         ("files", "holds no stage folders"), ("bad-sweep", "is not a sweep manifest")):
        assert main(["report", str(tmp_path / folder)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(tmp_path / folder) in err and says in err, err
        if folder != "bad-sweep":
            assert "STAGE-HASH" in err and "spec.json" in err


def test_markdown_tables_headings_and_escaping():
    out = markdown("# Title\n\n| a | b |\n|---|---|\n| <x> | `y` |\n\n- one\n![img](x.png)\ntext")
    assert "<h3>Title</h3>" in out and "<td>&lt;x&gt;</td><td><code>y</code></td>" in out
    assert "<li>one</li>" in out and "x.png" not in out and "<p>text</p>" in out
