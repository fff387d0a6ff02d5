"""`data.source: {kind: module}`: a user's class of captioned images (examples/custom_data) read like an image
folder: checked at validate time, bucketed from the sizes it reports without drawing an image, its pixels in the
batches, a bad item skipped and named."""
import shutil

import numpy as np
import pytest

from flowspec.compiler import SpecError, compile_spec
from flowspec.runtime.data.stream import BatchStream

EXAMPLE = "examples/custom_data"


@pytest.fixture
def example(tmp_path, root):
    shutil.copytree(root / EXAMPLE, tmp_path / "ex", ignore=shutil.ignore_patterns("runs", "__pycache__"))
    return tmp_path / "ex"


def plugin(folder, name: str, body: str) -> None:
    """A module of its own name in each test: Python keeps an imported module for the whole session."""
    (folder / f"{name}.py").write_text("import numpy as np\n\n" + body)


def stage_data(folder, *sets):
    plan = compile_spec(str(folder / "spec.yaml"), None, list(sets))
    return plan, plan.spec.stages[0].data


def test_a_target_that_is_not_an_image_class_is_refused_at_its_line(example):
    plugin(example, "mine", "def Nothing():\n    pass\n\nclass Half:\n    def __len__(self):\n        return 1\n")
    for target, said in (("mine:Nothing", "is not a class with __len__, caption(i) and image(i)"),
                         ("mine:Half", "is not a class with __len__, caption(i) and image(i)"),
                         ("gone:Stripes", "cannot import module 'gone'")):
        with pytest.raises(SpecError) as caught:
            compile_spec(str(example / "spec.yaml"), None, [f"data.source.target={target}"])
        issue = caught.value.issues[0]
        assert issue.path == "data.source.target" and said in issue.message


def test_buckets_come_from_the_reported_sizes_without_drawing_an_image(example):
    plugin(example, "counted", "from stripes import Stripes\n\nclass Counted(Stripes):\n    drawn = 0\n\n"
                    "    def image(self, i):\n        Counted.drawn += 1\n        return super().image(i)\n")
    _, data = stage_data(example, "data.source.target=counted:Counted")
    stream = BatchStream(data, 0, 16, 1, 4, spec_dir=str(example))
    report = stream.report()[0]["components"][0]
    import counted

    from stripes import SIZES, Stripes

    assert counted.Counted.drawn == 0
    made = Stripes(**data.source.options)
    shapes = [made.size(i) for i in range(len(made))]
    per_bucket = {b["bucket"]: b["images"] for b in report["per_bucket"]}
    buckets = stream.phase(0).buckets
    # each reported shape lands in the bucket of its aspect ratio: as many images there as of that shape
    for (height, width), bucket in zip(sorted(SIZES, key=lambda s: s[1] / s[0]), sorted(buckets, key=lambda b: b.width / b.height)):
        assert per_bucket[f"{bucket.height}x{bucket.width}"] == shapes.count((height, width))
    assert report["source"] == "module" and report["kept"] == len(made)


def test_a_batch_holds_the_classs_pixels_and_captions(example):
    plugin(example, "square", "from stripes import Stripes\n\nclass Square(Stripes):\n"
                    "    def __init__(self, **options):\n        super().__init__(**options)\n"
                    "        self.items = [(*item[:3], (48, 48)) for item in self.items]\n")
    _, data = stage_data(example, "data.curriculum=[{at_step: 0, resolution: 48, aspect_ratios: [1.0]}]",
                         "data.source.target=square:Square")
    stream = BatchStream(data, 0, 4, 1, 4, spec_dir=str(example))
    from square import Square

    made = Square(**data.source.options)
    batch = stream.batch(0, 0)
    assert (batch.height, batch.width) == (48, 48)
    assert len(batch.captions) == 4
    for image, caption, key in zip(batch.x, batch.captions, batch.keys):
        pixels = ((image.permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()
        # a square image at its own size: its pixels unchanged, under its own caption
        assert any(made.size(i) == (48, 48) and made.caption(i) == caption and np.array_equal(made.image(i), pixels)
                   for i in range(len(made)))
        assert key.startswith("file:")  # the cache key: a hash of the pixels


def test_a_bad_item_is_skipped_and_named_under_on_bad_sample_skip(example):
    plugin(example, "broken", "from stripes import Stripes\n\nclass Broken(Stripes):\n"
                    "    def image(self, i):\n        if i == 3:\n            raise OSError('disk gone')\n"
                    "        return super().image(i)\n")
    _, data = stage_data(example, "data.source.target=broken:Broken", "data.on_bad_sample=skip",
                         "data.source.options={count: 8, seed: 1}",
                         "data.curriculum=[{at_step: 0, resolution: 48, aspect_ratios: [0.5, 1.0, 2.0]}]")
    stream = BatchStream(data, 0, 8, 1, 4, spec_dir=str(example))
    for step in range(4):
        stream.batch(step, 0)
    skipped = stream.report()[0]["components"][0]["skipped_files"]
    assert skipped == [{"file": "broken:Broken[stripes-00003]", "reason": "image() failed: OSError: disk gone"}]


@pytest.mark.slow  # a training run (about 10 s): the default run stays under 20 minutes
def test_the_example_trains_on_its_own_data(example):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "flowspec.cli", "run", "spec.yaml", "--set", "stages.pretrain.steps=10"],
                         cwd=example, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "phase 0: module 256 of 256 images in buckets" in out.stdout
    assert list((example / "runs" / "custom_data").glob("pretrain-*/model/denoiser"))
