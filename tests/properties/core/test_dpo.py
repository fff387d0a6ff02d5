"""Diffusion-DPO's loss (algorithms.md section 7): log 2 when the policy is the reference; swapping winner
and loser negates the inner term, so L(w, l) + L(l, w) >= 2 log 2 with equality at 0, and the gradient of
a pair and its swap together vanishes at the reference; the loss falls as the winner's error drops
relative to the reference (or the loser's rises)."""
import math

import torch
from hypothesis import given
from hypothesis import strategies as st

from flowspec.runtime.core.dpo import dpo_loss

from ..strategies import floats, generator, seeds

betas = floats(1.0, 5000.0)


def errors(seed, n=6):
    g = generator(seed)
    return [torch.rand(n, generator=g, dtype=torch.float64) for _ in range(4)]


@given(seeds, betas)
def test_the_loss_is_log_2_when_the_policy_is_the_reference(seed, beta):
    e_w, e_l, _, _ = errors(seed)
    loss, inner = dpo_loss(e_w, e_l, e_w.clone(), e_l.clone(), beta)
    assert loss.item() == math.log(2) and not bool((inner > 0).any())


@given(seeds, floats(0.001, 10.0))
def test_swapping_winner_and_loser_negates_the_inner_term(seed, beta):
    e_w, e_l, r_w, r_l = errors(seed)
    forward, inner = dpo_loss(e_w, e_l, r_w, r_l, beta)
    backward, swapped = dpo_loss(e_l, e_w, r_l, r_w, beta)
    assert torch.allclose(swapped, -inner)
    assert forward.item() + backward.item() >= 2 * math.log(2) - 1e-12


@given(seeds, betas)
def test_a_pair_and_its_swap_have_no_gradient_at_the_reference(seed, beta):
    e_w, e_l, _, _ = errors(seed)
    theta = torch.cat([e_w, e_l]).requires_grad_(True)  # the policy's errors, equal to the reference's
    w, l = theta[:6], theta[6:]
    loss = dpo_loss(torch.cat([w, l]), torch.cat([l, w]), torch.cat([e_w, e_l]), torch.cat([e_l, e_w]), beta)[0]
    loss.backward()
    assert torch.allclose(theta.grad, torch.zeros(12, dtype=torch.float64), atol=1e-12)


@given(seeds, floats(0.1, 100.0), st.floats(0.01, 0.5))
def test_the_loss_falls_as_the_winners_error_drops(seed, beta, drop):
    e_w, e_l, r_w, r_l = errors(seed)
    assert dpo_loss(e_w - drop, e_l, r_w, r_l, beta)[0] < dpo_loss(e_w, e_l, r_w, r_l, beta)[0]
    assert dpo_loss(e_w, e_l + drop, r_w, r_l, beta)[0] < dpo_loss(e_w, e_l, r_w, r_l, beta)[0]
