"""Training on real image folders mixed with shapes: filters, per-phase mixture weights, bucket counts
that the plan and the run report alike, and latent caches that hit on a second run."""
import json

import numpy as np
import pytest
from PIL import Image

from .helpers import flowspec, stage_dir, weights, write_spec

SPEC = """\
flowspec: 1
name: mix
seed: 1
model:
  kind: mmdit
  preset: tiny
  config: {sample_size: 16, patch_size: 2, num_layers: 1}
  latent: {kind: vae, preset: tiny}
  text_encoder: {kind: builtin, num_layers: 1, max_tokens: 8}
data:
  source:
    kind: mixture
    components:
      - {name: synthetic, weight: 1.0, source: {kind: shapes, num_images: 32}}
      - name: photos
        weight: 1.0
        source: {kind: imagefolder, path: photos, filters: [{field: score, min: 0.5}]}
  curriculum:
    - {at_step: 0, resolution: 16, aspect_ratios: [0.5, 1.0, 2.0], complexity: [1, 5]}
    - {at_step: 3, resolution: 32, aspect_ratios: [1.0], complexity: [1, 5], mixture: {synthetic: 1.0, photos: 3.0}}
  cache: {latents: true, dir: cache}
train:
  global_batch: 4
  log_every: 1
  checkpoint: {every: 3}
  samples: {every: 100, num_steps: 2, per_prompt: 1, prompts: ["a red circle"]}
stages:
  - {name: pretrain, kind: pretrain, steps: 6}
"""


def make_photos(folder, count=12):
    folder.mkdir()
    rng = np.random.default_rng(0)
    lines = []
    for i in range(count):
        height, width = [(20, 40), (32, 32), (40, 20)][i % 3]
        pixels = rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i:02d}.png")
        lines.append(json.dumps({"file_name": f"img{i:02d}.png", "text": f"photo number {i}", "score": (i % 4) / 4}))
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")


@pytest.mark.slow  # about 30 s: the default run is at its budget
def test_mixture_with_filters_reports_counts_in_plan_and_run_and_caches_latents(tmp_path):
    make_photos(tmp_path / "photos")
    write_spec(tmp_path, SPEC)
    plan = json.loads(flowspec("plan", "spec.yaml", "--json", cwd=tmp_path).stdout)
    phases = plan["stages"][0]["data_report"]
    photos = phases[0]["components"][1]
    assert photos["found"] == 12 and photos["filtered"] == 6 and photos["kept"] == 6  # scores 0.5 and 0.75 pass
    assert sum(b["images"] for b in photos["per_bucket"]) == 6
    assert phases[1]["components"][1]["share"] == 0.75

    first = flowspec("run", "spec.yaml", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "photos 6 of 12 images" in first.stdout
    run = stage_dir(tmp_path, "mix", "pretrain")
    assert json.loads((run / "data_report.json").read_text()) == phases
    results = json.loads((run / "results.json").read_text())
    assert results["caches"]["latents"]["misses"] > 0

    again = flowspec("run", "spec.yaml", "--set", "output_dir=again", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    rerun = next((tmp_path / "again/mix").glob("pretrain-*"))
    cached = json.loads((rerun / "results.json").read_text())["caches"]["latents"]
    assert cached["misses"] == 0 and cached["hits"] == results["caches"]["latents"]["hits"] + \
        results["caches"]["latents"]["misses"]
    a, b = weights(run), weights(rerun)
    assert all((a[k] == b[k]).all() for k in a)  # a warm cache changes nothing but the speed


@pytest.mark.slow  # about 20 s: the default run is at its budget
def test_webdataset_training_is_the_same_with_and_without_loader_workers(tmp_path):
    from ..data.test_webdataset import make_shards

    (tmp_path / "shards").mkdir()
    urls = make_shards(tmp_path / "shards")
    spec = SPEC.split("data:")[0] + f"""data:
  source: {{kind: webdataset, urls: "{urls}"}}
  curriculum: [{{at_step: 0, resolution: 16, aspect_ratios: [0.5, 1.0, 2.0], complexity: [1, 5]}}]
""" + "train:" + SPEC.split("train:")[1]
    write_spec(tmp_path, spec)
    plain = flowspec("run", "spec.yaml", cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert "webdataset read" in plain.stdout
    workers = flowspec("run", "spec.yaml", "--set", "data.loader.num_workers=2", "--set", "output_dir=w", cwd=tmp_path)
    assert workers.returncode == 0, workers.stderr
    a = weights(stage_dir(tmp_path, "mix", "pretrain"))
    b = weights(next((tmp_path / "w/mix").glob("pretrain-*")))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


@pytest.mark.slow  # the SDXL-like smoke pre-training (about 35 s): the default run stays under 20 minutes
@pytest.mark.extended  # the same pre-training runs in the sdxl_like chain; phases: tests/data/test_stream.py, test_resume.py
def test_sdxl_like_smoke_pretrains_through_its_two_phase_bucketed_curriculum(tmp_path, root, smoke_vae):
    smoke_vae(tmp_path, "sdxl_like")
    run = flowspec("run", str(root / "specs/sdxl_like.yaml"), "--profile", "smoke", "--stage", "pretrain",
                   "--set", "train.log_every=1", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "phase 1: shapes 256 of 256 images in buckets 56x72, 64x64, 72x56" in run.stdout
    pretrain = stage_dir(tmp_path, "sdxl_like", "pretrain")
    report = json.loads((pretrain / "data_report.json").read_text())
    assert [p["buckets"] for p in report] == [["32x32"], ["56x72", "64x64", "72x56"]]
    records = [json.loads(line) for line in (pretrain / "metrics.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in records] == [0] * 6 + [1] * 6  # the phase changes exactly at step 6
    assert {r["resolution"] for r in records[6:]} <= {56, 64, 72} and {r["resolution"] for r in records[:6]} == {32}


@pytest.mark.slow  # about 30 s: the default run is at its budget
def test_a_corrupt_image_is_one_positioned_line_in_plan_and_run_and_skip_names_it(tmp_path):
    make_photos(tmp_path / "photos")
    (tmp_path / "photos" / "img05.png").write_bytes(b"not an image at all")  # score 0.25: filtered out, never read
    (tmp_path / "photos" / "img07.png").write_bytes(b"\x89PNG garbage")  # score 0.75: kept by the filter
    write_spec(tmp_path, SPEC)
    data_line = SPEC.splitlines().index("data:") + 1
    for command in ("plan", "run"):
        out = flowspec(command, "spec.yaml", cwd=tmp_path)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        first = out.stderr.splitlines()[0]
        assert first.startswith(f"spec.yaml:{data_line}:1: stages.pretrain.data: photos/img07.png: cannot read")
        assert "data.on_bad_sample: skip" in first
    assert not list(tmp_path.glob("runs/mix/pretrain-*/checkpoints/*"))  # refused before any training

    run = flowspec("run", "spec.yaml", "--set", "data.on_bad_sample=skip", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "photos 5 of 12 images" in run.stdout and "1 bad file(s) skipped: photos/img07.png" in run.stdout
    done = next(d for d in tmp_path.glob("runs/mix/pretrain-*") if (d / "DONE").exists())
    report = json.loads((done / "data_report.json").read_text())
    skipped = report[0]["components"][1]["skipped_files"]
    assert [f["file"] for f in skipped] == ["photos/img07.png"]
