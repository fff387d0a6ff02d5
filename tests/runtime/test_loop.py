"""The shared loop reads the device back only at the steps that log, save or sample, and still never saves or
logs past a non-finite step: the first bad step is named, whatever happened after it."""
import json

import pytest
import torch
from torch import nn

from flowspec.runtime.train.checkpoint import latest_checkpoint, load_checkpoint
from flowspec.runtime.train.ema import EMA
from flowspec.runtime.train.loop import DivergenceWatch, LoopConfig, Trainer, TrainingDiverged
from flowspec.schemas.optim import AdamW
from flowspec.schemas.train import Train


class Scripted:
    """A loss on a linear layer that becomes NaN from step `bad_from` on (0-based), and counts its host reads."""

    def __init__(self, layer: nn.Linear, bad_from: int | None):
        self.layer, self.bad_from = layer, bad_from

    def __call__(self, step: int, micro: int):
        x = torch.full((4, 3), 0.5 + step)
        loss = self.layer(x).pow(2).mean()
        if self.bad_from is not None and step >= self.bad_from:
            loss = loss * float("nan")
        return loss, {"doubled": loss.detach() * 2}


def trainer(tmp_path, bad_from=None, steps=12, log_every=5, checkpoint_every=4, samples=None, samples_every=3):
    torch.manual_seed(0)
    layer = nn.Linear(3, 2)
    config = LoopConfig(steps=steps, accumulation=2, seed=0, run_dir=tmp_path, label="t", device=torch.device("cpu"),
                        log_every=log_every, checkpoint_every=checkpoint_every, samples_every=samples_every)
    train = Train.model_validate({"ema": {"decay": 0.9}})
    result = Trainer(config, {"layer": layer}, Scripted(layer, bad_from), train, AdamW.model_validate({"lr": 1e-2}))
    result.hooks.on_samples = samples
    return result


def test_a_nan_between_log_steps_is_raised_at_the_next_check_naming_its_step_and_nothing_bad_is_saved(tmp_path):
    grids = []
    run = trainer(tmp_path, bad_from=5, samples=grids.append, samples_every=20)  # step 6 (1-based) is the first bad
    with pytest.raises(TrainingDiverged, match="the loss is nan and the gradient norm nan at step 6;"):
        run.run()
    # Steps 6 and 7 ran without a read-back; the checkpoint due at step 8 was refused, step 4's is the last.
    assert run.step == 8 and latest_checkpoint(tmp_path).name == "step-00000004.pt"
    state = load_checkpoint(latest_checkpoint(tmp_path))
    assert all(torch.isfinite(v).all() for v in state["modules"]["layer"].values())
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [5]


def test_a_sample_grid_is_not_drawn_from_weights_past_a_bad_step(tmp_path):
    grids = []
    run = trainer(tmp_path, bad_from=5, samples=grids.append, samples_every=3, checkpoint_every=100)
    with pytest.raises(TrainingDiverged, match="at step 6;"):
        run.run()
    assert run.step == 6 and grids == [3]


def test_logged_metrics_are_plain_numbers_of_the_logged_step(tmp_path):
    run = trainer(tmp_path, steps=10)
    run.run()
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [5, 10]
    for record in logged:
        # the logged loss is the mean over the accumulation of step `step`'s losses; `doubled` is the last one's
        assert record["doubled"] == pytest.approx(2 * record["loss"], rel=1e-6)
        assert isinstance(record["grad_norm"], float) and record["lr"] == pytest.approx(1e-2)


def test_the_watch_keeps_the_first_bad_step():
    watch = DivergenceWatch(10, 5, torch.device("cpu"))
    one, nan, inf = torch.tensor(1.0), torch.tensor(float("nan")), torch.tensor(float("inf"))
    watch.note(one, one)
    assert watch.first_bad() is None
    watch.note(one, inf)  # step 12: a finite loss with an infinite norm
    watch.note(nan, nan)
    assert watch.first_bad() == 12 and "at step 12" in watch.describe() and "norm inf" in watch.describe()


def test_ema_update_is_the_configured_recursion():
    torch.manual_seed(0)
    layer = nn.Linear(3, 2)
    ema = EMA({"layer": layer}, decay=0.9)
    start = {k: v.clone() for k, v in ema.shadow["layer"].items()}
    with torch.no_grad():
        layer.weight.add_(1.0)
    ema.update(1)
    assert torch.equal(ema.shadow["layer"]["weight"], start["weight"].mul(0.9).add(layer.weight, alpha=0.1))
    assert torch.equal(ema.shadow["layer"]["bias"], start["bias"].mul(0.9).add(layer.bias, alpha=0.1))
