"""ODE solvers and classifier-free guidance (algorithms.md section 1, invariants 2 and 4)."""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from flowspec.runtime.core import LinearPath, cfg_velocity, euler, heun, inference_sigmas, sample_ode

from ..strategies import floats, generator, grids, seeds


def dirac_field(x0):
    """The exact field when the data is the single point x0: v(x, t) = (x - x0) / t."""
    def v(x, t):
        assert t.shape == (x.shape[0],)
        assert bool((t > 0).all()), "the Dirac field is singular at t = 0"
        return (x - x0) / t.reshape(-1, *[1] * (x.ndim - 1))
    return v


def time_only_field(a, b):
    """v(x, t) = a + b t: the exact flow is x(t') = x(t) + a (t' - t) + b (t'^2 - t^2) / 2."""
    return lambda x, t: a + b * t.reshape(-1, *[1] * (x.ndim - 1)) * torch.ones_like(x)


@given(grids(), seeds, st.sampled_from(["euler", "heun"]))
def test_dirac_data_is_hit_exactly_on_any_grid(sigmas, seed, solver):
    g = generator(seed)
    x0, eps = torch.randn(3, 2, 4, generator=g, dtype=torch.float64), torch.randn(3, 2, 4, generator=g,
                                                                                   dtype=torch.float64)
    path = sample_ode(dirac_field(x0), eps, sigmas, solver=solver, return_trajectory=True)
    assert path.shape == (len(sigmas), *eps.shape)
    torch.testing.assert_close(path[-1], x0, rtol=0, atol=1e-10)
    # Every iterate sits on the straight line between eps and x0.
    for x_i, t_i in zip(path, sigmas.tolist()):
        torch.testing.assert_close(x_i, LinearPath().sample(x0, eps, t_i).x_t, rtol=0, atol=1e-10)


@given(grids(t_end=0.05), floats(-2.0, 2.0), floats(0.5, 3.0))
def test_heun_is_exact_for_fields_linear_in_t_and_euler_is_not(sigmas, a, b):
    x = torch.zeros(2, 3, dtype=torch.float64)
    t0, t_end = sigmas[0].item(), sigmas[-1].item()
    exact = a * (t_end - t0) + b * (t_end**2 - t0**2) / 2
    field = time_only_field(a, b)
    torch.testing.assert_close(heun(field, x, sigmas), torch.full_like(x, exact), rtol=0, atol=1e-12)
    # Euler's error on this field is exactly b/2 * sum(h_i^2) > 0 (first order).
    euler_error = b / 2 * (sigmas.diff() ** 2).sum().item()
    torch.testing.assert_close(euler(field, x, sigmas), torch.full_like(x, exact - euler_error), rtol=0, atol=1e-12)
    assert euler_error > 1e-4


def test_heun_takes_a_plain_euler_step_into_zero():
    calls = []

    def field(x, t):
        calls.append(t[0].item())
        return 1.0 + 2.0 * t.reshape(-1, 1) * torch.ones_like(x)

    sigmas = torch.tensor([1.0, 0.6, 0.25, 0.0], dtype=torch.float64)
    x = torch.zeros(2, 3, dtype=torch.float64)
    out = heun(field, x, sigmas)
    assert 0.0 not in calls and len(calls) == 2 * 3 - 1
    expected = euler(field, heun(field, x, sigmas[:-1]), sigmas[-2:])
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_euler_evaluates_at_each_grid_point_but_the_last():
    seen = []

    def field(x, t):
        seen.append(t.clone())
        return torch.zeros_like(x)

    sigmas = inference_sigmas(6, 3.0)
    euler(field, torch.zeros(4, 2), sigmas)
    assert all(t.shape == (4,) and t.dtype == torch.float32 for t in seen)
    torch.testing.assert_close(torch.stack([t[0] for t in seen]), sigmas[:-1])


def test_float32_compute_and_determinism():
    x0 = torch.randn(2, 4, 4, generator=generator(0))
    noise = torch.randn(2, 4, 4, generator=generator(1)).bfloat16()
    sigmas = inference_sigmas(8, 3.0)

    def field(x, t):
        assert x.dtype == torch.float32  # the state is never stepped in bf16
        return dirac_field(x0)(x, t).bfloat16()

    first = sample_ode(field, noise, sigmas, solver="heun")
    assert first.dtype == torch.float32
    assert torch.equal(first, sample_ode(field, noise, sigmas, solver="heun"))
    traj = sample_ode(field, noise, sigmas, solver="heun", return_trajectory=True)
    assert torch.equal(traj[0], noise.float()) and torch.equal(traj[-1], first)


def test_bad_solver_or_grid_is_an_error():
    x = torch.zeros(1, 2)
    zero = lambda x, t: torch.zeros_like(x)  # noqa: E731
    with pytest.raises(ValueError, match="solver"):
        sample_ode(zero, x, inference_sigmas(4), solver="rk4")
    with pytest.raises(ValueError, match="decreasing"):
        euler(zero, x, torch.tensor([0.0, 0.5, 1.0]))
    with pytest.raises(ValueError, match="decreasing"):
        euler(zero, x, torch.tensor([1.0, 0.5, 0.5, 0.0]))
    with pytest.raises(ValueError):
        euler(zero, x, torch.tensor([1.0]))


# ----- classifier-free guidance -------------------------------------------------------------------------

@given(seeds, floats(-2.0, 10.0))
def test_cfg_interpolates_and_extrapolates(seed, scale):
    g = generator(seed)
    v_cond, v_uncond = torch.randn(3, 5, generator=g, dtype=torch.float64), torch.randn(3, 5, generator=g,
                                                                                       dtype=torch.float64)
    torch.testing.assert_close(cfg_velocity(v_cond, v_uncond, 1.0), v_cond, rtol=0, atol=1e-15)
    torch.testing.assert_close(cfg_velocity(v_cond, v_uncond, 0.0), v_uncond, rtol=0, atol=0)
    torch.testing.assert_close(cfg_velocity(v_cond, v_uncond, scale), (1 - scale) * v_uncond + scale * v_cond,
                               rtol=1e-12, atol=1e-12)
    # Identical branches make guidance a no-op at every scale.
    torch.testing.assert_close(cfg_velocity(v_cond, v_cond, scale), v_cond, rtol=0, atol=1e-14)
