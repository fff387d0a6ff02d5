"""The autoencoder stage's formulas (runtime/core/autoencoder.py): the KL term against torch's closed form of
KL between Gaussians, PSNR against its definition, and the latent normalisation's defining property."""
import math

import torch
from hypothesis import given
from hypothesis import strategies as st

from flowspec.runtime.core.autoencoder import kl_term, latent_normalisation, psnr, reconstruction_loss

from ..strategies import generator, seeds

latent_shapes = st.sampled_from([(2, 4, 3, 3), (1, 16, 2, 2), (3, 4, 5, 1)])


def gaussian(seed, shape):
    g = generator(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(shape, generator=g, dtype=torch.float64)


@given(seeds, latent_shapes, st.integers(1, 10_000))
def test_kl_term_is_the_gaussian_kl_summed_per_latent_over_image_elements(seed, shape, elements):
    mean, logvar = gaussian(seed, shape)
    q = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
    expected = torch.distributions.kl_divergence(q, p).reshape(shape[0], -1).sum(1).mean() / elements
    assert math.isclose(kl_term(mean, logvar, elements).item(), expected.item(), rel_tol=1e-5, abs_tol=1e-9)
    assert kl_term(mean, logvar, elements).item() > 0  # zero only at N(0, I)
    assert kl_term(torch.zeros(shape), torch.zeros(shape), elements).item() == 0.0


@given(seeds, st.floats(0.01, 1.0))
def test_psnr_of_a_constant_offset_is_ten_log10_of_one_over_its_square(seed, offset):
    # x in [-1, 1 - offset]: x + offset stays in range (no clamping); on [0, 1] the error is offset / 2
    x = torch.rand((3, 3, 4, 4), generator=generator(seed), dtype=torch.float64) * (2 - offset) - 1
    expected = 10 * math.log10(1 / (offset / 2) ** 2)
    assert torch.allclose(psnr(x, x + offset), torch.full((3,), expected, dtype=torch.float64), atol=1e-9)


@given(seeds)
def test_psnr_is_per_image_and_highest_for_the_better_reconstruction(seed):
    g = generator(seed)
    x = torch.rand((2, 3, 4, 4), generator=g) * 2 - 1
    noise = torch.randn(x.shape, generator=g) * 0.1
    values = psnr(x, (x + noise * torch.tensor([1.0, 3.0]).view(2, 1, 1, 1)).clamp(-1, 1))
    assert values.shape == (2,) and values[0] > values[1]


@given(seeds, st.sampled_from(["l1", "l2"]))
def test_reconstruction_loss_is_the_mean_absolute_or_squared_error(seed, kind):
    a, b = gaussian(seed, (2, 3, 4, 4))
    power = 1 if kind == "l1" else 2
    assert math.isclose(reconstruction_loss(a, b, kind).item(), ((a - b).abs() ** power).mean().item(), rel_tol=1e-6)
    assert reconstruction_loss(a, a, kind).item() == 0.0


@given(seeds, st.floats(-3, 3), st.floats(0.05, 5), st.integers(1, 4))
def test_normalised_latents_have_mean_zero_and_unit_variance(seed, shift, spread, parts):
    g = generator(seed)
    latents = [torch.randn((k + 1, 4, 3, 3), generator=g, dtype=torch.float64) * spread + shift for k in range(parts)]
    scale, mean = latent_normalisation(latents)
    normalised = torch.cat([((z - mean) * scale).flatten() for z in latents])
    assert abs(normalised.mean().item()) < 1e-9
    assert math.isclose(normalised.pow(2).mean().item(), 1.0, rel_tol=1e-9)


def test_constant_latents_are_refused():
    try:
        latent_normalisation([torch.ones(2, 4, 2, 2)])
    except ValueError as exc:
        assert "zero variance" in str(exc)
    else:
        raise AssertionError("constant latents were accepted")
