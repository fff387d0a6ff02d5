"""A checkpoint is pinned to the frozen models its stage trained against (runtime/train/loop.py PINNED):
the LoRA base, a preference stage's reference, a distillation stage's teacher. A resume that loaded
another one is refused, naming the stage key that holds it; the same hashes resume."""
from pathlib import Path

import pytest
import torch
from torch import nn

from flowspec.compiler import compile_spec
from flowspec.runtime.objectives import Objective
from flowspec.runtime.train.loop import BaseChanged, LoopConfig, Trainer

ROOT = Path(__file__).resolve().parents[2]


class Nothing(Objective):
    def __call__(self, step, micro):
        raise AssertionError("not trained here")


def trainer(run_dir, **pins) -> Trainer:
    plan = compile_spec(str(ROOT / "specs/toy2d.yaml"))
    stage = plan.spec_stage(plan.stages[0].name)
    config = LoopConfig(steps=1, accumulation=1, seed=0, run_dir=run_dir, label="t", device=torch.device("cpu"), **pins)
    return Trainer(config, {"net": nn.Linear(2, 2)}, Nothing(None), stage.train, stage.optimizer)


@pytest.mark.parametrize("role,key", [("base", "from"), ("reference", "reference"), ("teacher", "teacher")])
def test_a_resume_on_another_frozen_model_is_refused_naming_its_key(tmp_path, role, key):
    trainer(tmp_path, **{f"frozen_{role}": "aaaa"}).checkpoint()
    assert trainer(tmp_path, **{f"frozen_{role}": "aaaa"}).restore()
    with pytest.raises(BaseChanged) as caught:
        trainer(tmp_path, **{f"frozen_{role}": "bbbb"}).restore()
    assert caught.value.field == key and "aaaa" in str(caught.value) and f"loaded {role} bbbb" in str(caught.value)
