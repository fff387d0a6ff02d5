"""Distillation arithmetic (algorithms.md section 9) against its invariants and the Gaussian oracles of
section 11: one student step with the progressive target lands where two teacher steps do, and for the
straight (2-rectified) field the target is the teacher's own velocity; the consistency function keeps its
boundary for any velocity and, on straight paths, is the ODE's endpoint; pseudo-Huber's two limits; EMA at
decay 1 and 0; hinge and R1 at their zeros and on a linear discriminator; DMD's loss has DMD's gradient;
straightness is 0 for the 2-rectified field and not for the 1-rectified one."""
import torch
from hypothesis import given
from hypothesis import strategies as st

from flowspec.runtime.core import euler, gaussian_velocity, rectified_gaussian_velocity
from flowspec.runtime.core.distill import (
    consistency_function,
    dmd_gradient,
    dmd_loss,
    ema_update,
    hinge_discriminator_loss,
    pseudo_huber,
    progressive_target,
    r1_penalty,
    straightness,
)

from ..strategies import dims, floats, generator, grids, mus, seeds, stds

B = 16


def points(seed, d, n=B):
    return torch.randn(n, d, generator=generator(seed), dtype=torch.float64)


@st.composite
def three_times(draw):
    """1 >= t > t_mid > t_end >= 0."""
    t_end = draw(floats(0.0, 0.9))
    t = draw(floats(t_end + 0.05, 1.0))
    return t, draw(floats(t_end + 0.01 * (t - t_end), t - 0.01 * (t - t_end))), t_end


def gaussian(mu, s):
    return lambda x, t: gaussian_velocity(x, t, mu, s)


@given(seeds, dims, mus, stds, three_times())
def test_one_student_step_lands_where_two_teacher_steps_do(seed, d, mu, s, times):
    t, t_mid, t_end = times
    x, teacher = points(seed, d), gaussian(mu, s)
    target = progressive_target(teacher, x, t, t_mid, t_end)
    two_steps = euler(teacher, x, torch.tensor([t, t_mid, t_end], dtype=torch.float64))
    assert torch.allclose(x + (t_end - t) * target, two_steps, rtol=1e-10, atol=1e-10)


@given(seeds, dims, mus, stds, three_times())
def test_equal_halves_give_the_mean_of_the_two_teacher_velocities(seed, d, mu, s, times):
    t, _, t_end = times
    t_mid = (t + t_end) / 2
    x, teacher = points(seed, d), gaussian(mu, s)
    x_mid = x + (t_mid - t) * teacher(x, torch.full((B,), t, dtype=torch.float64))
    mean = (teacher(x, t) + teacher(x_mid, t_mid)) / 2
    assert torch.allclose(progressive_target(teacher, x, t, t_mid, t_end), mean, rtol=1e-10, atol=1e-10)


@given(seeds, dims, mus, floats(0.05, 3.0), three_times())
def test_the_straight_field_is_its_own_progressive_target(seed, d, mu, s, times):
    """Distilling the 2-rectified Gaussian field changes nothing: its paths are straight."""
    t, t_mid, t_end = times
    x = points(seed, d)
    field = lambda y, u: rectified_gaussian_velocity(y, u, mu, s)  # noqa: E731
    assert torch.allclose(progressive_target(field, x, t, t_mid, t_end), field(x, t), rtol=1e-9, atol=1e-9)


@given(seeds, dims)
def test_the_consistency_function_is_the_identity_at_t_0_for_any_velocity(seed, d):
    x, v = points(seed, d), points(seed + 1, d) * 1e6
    assert torch.equal(consistency_function(x, 0.0, v), x)
    assert torch.equal(consistency_function(x, torch.zeros(B, dtype=torch.float64), v), x)


@given(seeds, dims, mus, floats(0.05, 3.0), floats(0.01, 1.0))
def test_on_straight_paths_the_consistency_function_is_the_ode_endpoint(seed, d, mu, s, t):
    """2-RF coupling x0 = mu + s eps: from x_t the ODE ends at mu + s eps, eps = (x_t - (1-t) mu) / ((1-t) s + t)."""
    x_t = points(seed, d)
    eps = (x_t - (1 - t) * mu) / ((1 - t) * s + t)
    f = consistency_function(x_t, t, rectified_gaussian_velocity(x_t, t, mu, s))
    assert torch.allclose(f, mu + s * eps, rtol=1e-9, atol=1e-9)


@given(seeds, dims)
def test_pseudo_huber_is_l2_over_2c_for_large_c_and_l1_for_small_c(seed, d):
    a, b = points(seed, d), points(seed + 1, d)
    norm = (a - b).norm(dim=1)
    assert bool((pseudo_huber(a, b, 1.0) >= 0).all()) and torch.equal(pseudo_huber(a, a, 0.5), torch.zeros(B, dtype=torch.float64))
    c = 1e4 * norm.max().item()
    assert torch.allclose(c * pseudo_huber(a, b, c), norm**2 / 2, rtol=1e-3)
    assert torch.allclose(pseudo_huber(a, b, 1e-9), norm, rtol=1e-6)


@given(seeds, floats(0.0, 1.0))
def test_ema_keeps_the_target_at_decay_1_copies_at_0_and_interpolates_between(seed, decay):
    online = [points(seed, 3), points(seed + 1, 5)]
    start = [points(seed + 2, 3), points(seed + 3, 5)]
    for mu, expected in [(1.0, start), (0.0, online), (decay, [decay * s + (1 - decay) * o for s, o in zip(start, online)])]:
        target = [t.clone() for t in start]
        ema_update(target, online, mu)
        assert all(torch.allclose(t, e, rtol=1e-12, atol=1e-12) for t, e in zip(target, expected))
    target = [t.clone() for t in start]
    ema_update(target, online, 1.0)
    assert all(torch.equal(t, s) for t, s in zip(target, start))


@given(seeds, dims)
def test_r1_is_zero_for_a_constant_discriminator_and_the_squared_weight_norm_for_a_linear_one(seed, d):
    x = points(seed, d).requires_grad_(True)
    w = points(seed + 1, d, n=1)[0]
    assert r1_penalty(torch.full((B,), 3.0, dtype=torch.float64) + 0 * x.sum(), x).item() == 0.0
    assert r1_penalty(torch.ones(B, dtype=torch.float64), x).item() == 0.0  # not computed from x at all
    assert abs(r1_penalty(x @ w, x).item() - (w @ w).item()) < 1e-10


@given(seeds)
def test_the_hinge_losses_vanish_beyond_their_margins(seed):
    g = generator(seed)
    real, fake = 1 + torch.rand(B, generator=g), -1 - torch.rand(B, generator=g)
    assert hinge_discriminator_loss(real, fake).item() == 0.0
    assert hinge_discriminator_loss(torch.zeros(B), torch.zeros(B)).item() == 2.0
    inside_r, inside_f = real - 1.5, fake + 1.5  # within (-1, 1): both hinges are linear there
    assert torch.isclose(hinge_discriminator_loss(inside_r, inside_f), 2 - inside_r.mean() + inside_f.mean())


@given(seeds, dims)
def test_dmd_loss_has_the_dmd_gradient_and_none_when_fake_equals_real(seed, d):
    x_hat = points(seed, d).requires_grad_(True)
    real, fake = points(seed + 1, d), points(seed + 2, d)
    g = dmd_gradient(x_hat.detach(), fake, real)
    dmd_loss(x_hat, g).backward()
    assert torch.allclose(x_hat.grad, g / B, rtol=1e-12, atol=1e-14)
    scale = (x_hat.detach() - real).abs().mean(dim=1, keepdim=True)
    assert torch.allclose(g, (fake - real) / scale, rtol=1e-12)
    assert torch.equal(dmd_gradient(x_hat.detach(), real, real), torch.zeros_like(real))


@given(seeds, dims, mus, floats(0.05, 3.0), grids(max_steps=20))
def test_the_rectified_field_is_straight(seed, d, mu, s, sigmas):
    field = lambda x, t: rectified_gaussian_velocity(x, t, mu, s)  # noqa: E731
    assert straightness(field, points(seed, d), sigmas) < 1e-20


@given(seeds, dims, mus, stds)
def test_the_first_rectified_field_is_not_straight(seed, d, mu, s):
    """dX/dt = -mu + sigma'(t) eps along the 1-RF paths, and sigma' runs from -s to 1: its variance over t is
    what straightness measures, well above 0 on a 16-step grid."""
    sigmas = torch.linspace(1, 0, 17, dtype=torch.float64)
    assert straightness(gaussian(mu, s), points(seed, d), sigmas) > 1e-3
