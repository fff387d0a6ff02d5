"""ReFL's invariants (algorithms.md section 5): one model forward per step carries gradient, at a step drawn
from grad_steps; the detached prefix is the no-grad sampler's trajectory (at the last step x0_hat is the
sampler's output, bit for bit); ReLU(margin - r) is 0 with zero gradient once every reward reaches the margin."""
import types

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flowspec.compiler import compile_spec
from flowspec.runtime.core import sample_ode
from flowspec.runtime.core.randomness import SliceRandom
from flowspec.runtime.data.stream import Batch
from flowspec.runtime.models.bundle import build_bundle
from flowspec.runtime.objectives.reward_feedback import ROLLOUT_STREAM, RewardFeedback
from flowspec.runtime.rewards import Scorer, build_reward
from flowspec.runtime.sampling import grid_for

from ..strategies import seeds

SPEC = """\
flowspec: 1
name: refl
model: {kind: mlp, preset: tiny}
data: {source: {kind: toy2d, distribution: {kind: gaussian_mixture, means: [[-1, 0], [1, 0]], stds: [0.2, 0.2]}}}
train: {global_batch: 16, cfg_dropout: 0.0, samples: {cfg_scale: 1.0}}
stages:
  - {name: pretrain, kind: pretrain, steps: 10}
  - {name: refl, kind: reward_feedback, from: pretrain, steps: 10, sampling_steps: 6, grad_steps: [2, 5],
     reward: {kind: toy2d_region, centers: [[1, 0]], radius: 0.2}}
"""


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    path = tmp_path_factory.mktemp("refl") / "spec.yaml"
    path.write_text(SPEC)
    return compile_spec(str(path)).spec.stages[1]


class Feed:
    def __init__(self, n: int):
        self.x = torch.randn(n, 2, generator=torch.Generator().manual_seed(n))

    def batch(self, step, micro):
        return Batch(x=self.x, captions=[""] * len(self.x), class_labels=None, height=0, width=0, phase=0)


def objective(stage, seed: int, **changes) -> RewardFeedback:
    stage = stage.model_copy(update=changes)
    bundle = build_bundle(stage_model(), seed=seed)
    ctx = types.SimpleNamespace(bundle=bundle, feed=Feed(16), device=torch.device("cpu"), seed=seed, stage=stage,
                                repa=[], reward=Scorer(build_reward(stage.reward)), enhancer=None)
    return RewardFeedback(ctx)


def stage_model():
    from pydantic import TypeAdapter

    from flowspec.schemas.spec import Spec

    return TypeAdapter(Spec.model_fields["model"].annotation).validate_python({"kind": "mlp", "preset": "tiny"})


def count_grad_forwards(refl: RewardFeedback) -> list[bool]:
    calls = []
    net = refl.bundle.denoiser
    original = net.velocity

    def counted(*args, **kwargs):
        calls.append(torch.is_grad_enabled())
        return original(*args, **kwargs)

    net.velocity = counted
    return calls


@settings(max_examples=15, deadline=None)
@given(seed=seeds, step=st.integers(0, 1000), backprop=st.integers(1, 3))
def test_the_last_backprop_steps_forwards_carry_gradient_ending_at_a_step_drawn_from_grad_steps(stage, seed, step,
                                                                                                 backprop):
    refl = objective(stage, seed % 1000, backprop_steps=backprop)
    calls = count_grad_forwards(refl)
    loss, metrics = refl.reward_loss(refl.feed.batch(step, 0), step)
    j = metrics["grad_step"]
    assert 2 <= j <= 5 and calls == [False] * (j + 1 - backprop) + [True] * backprop
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in refl.bundle.denoiser.parameters())
    # the plan's cost is these forwards (a backward counts 2) averaged over the drawn step, plus the real-data term
    counted = sum(j + 1 - backprop + 3 * backprop for j in range(2, 6)) / 4 + 3
    assert RewardFeedback.cost(refl.stage).forwards_per_sample == counted


@settings(max_examples=10, deadline=None)
@given(seed=seeds, step=st.integers(0, 1000))
def test_at_the_last_step_x0_hat_is_the_no_grad_samplers_output(stage, seed, step):
    refl = objective(stage, seed % 1000, grad_steps=(5, 5))
    seen = []
    refl.scorer = lambda items, prompts, grad: seen.append(items.detach()) or torch.zeros(len(items))
    batch = refl.feed.batch(step, 0)
    refl.reward_loss(batch, step)
    noise = SliceRandom((refl.seed + ROLLOUT_STREAM) % 2**63, step, 0, 16, 16).randn("rollout", (16, 2))
    sigmas = grid_for(refl.bundle, stage.timesteps, 6, 0, 0)
    with torch.no_grad():
        expected = sample_ode(lambda x, t: refl.bundle.denoiser.velocity(x, t, refl_condition(refl)).float(), noise,
                              sigmas)
    assert torch.equal(seen[0], expected)


def refl_condition(refl):
    from flowspec.runtime.models.conditioning import make_condition

    return make_condition(refl.bundle, [""] * 16, None, None)


@settings(max_examples=10, deadline=None)
@given(seed=seeds, margin=st.floats(-1e6, -10.0))
def test_no_loss_and_no_gradient_once_every_reward_reaches_the_margin(stage, seed, margin):
    refl = objective(stage, seed % 1000, reward_margin=margin)  # toy2d_region's rewards are >= -10 here
    loss, metrics = refl.reward_loss(refl.feed.batch(0, 0), 0)
    assert metrics["reward"] > margin and loss.item() == 0.0
    loss.backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in refl.bundle.denoiser.parameters())


def test_backprop_steps_reaching_before_the_first_step_is_refused(tmp_path):
    from flowspec.compiler import SpecError

    path = tmp_path / "spec.yaml"
    path.write_text(SPEC.replace("grad_steps: [2, 5],", "grad_steps: [2, 5], backprop_steps: 4,"))
    with pytest.raises(SpecError, match="backprop_steps 4 reaches before the first step when the drawn step is 2: at most 3"):
        compile_spec(str(path))
    path.write_text(SPEC.replace("grad_steps: [2, 5],", "grad_steps: [2, 5], backprop_steps: 3,"))
    assert compile_spec(str(path)).spec.stages[1].backprop_steps == 3
