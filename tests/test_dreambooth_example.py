"""The DreamBooth example subject (examples/dreambooth/ring, used by the quick start) is what its script draws."""
import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "dreambooth"


def test_the_committed_subject_images_are_the_scripts_drawing(tmp_path):
    spec = importlib.util.spec_from_file_location("make_subject", EXAMPLE / "make_subject.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main([str(tmp_path)])
    drawn = sorted(p.name for p in tmp_path.glob("*.png"))
    assert drawn == sorted(p.name for p in (EXAMPLE / "ring").glob("*.png")) and len(drawn) == 5
    for name in drawn:
        assert np.array_equal(np.asarray(Image.open(tmp_path / name)), np.asarray(Image.open(EXAMPLE / "ring" / name)))
    ring = np.asarray(Image.open(tmp_path / "ring-0.png")).reshape(-1, 3).astype(int)
    dark = np.abs(ring - module.DARK).sum(1) < 30
    light = np.abs(ring - module.LIGHT).sum(1) < 30
    assert dark.sum() > 20 and light.sum() > 20  # both checker colours are there
