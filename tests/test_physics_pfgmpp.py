"""PFGM++ physics against closed forms and Monte Carlo."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from medpfgm.physics import pfgmpp


@pytest.mark.parametrize("n_dim,aug_dim", [(3, 1), (8, 4), (20, 64)])
def test_student_t_kernel_matches_the_radius_law(n_dim, aug_dim):
    """p(R) ∝ R^(N-1) / (R^2 + r^2)^((N+D)/2), r = sigma sqrt(D)  <=>  R^2 / (R^2 + r^2) ~ Beta(N/2, D/2)."""
    sigma = 0.7
    noise = pfgmpp.kernel_noise((4000, n_dim), torch.full((4000,), sigma), aug_dim, torch.Generator().manual_seed(n_dim), torch.float64)
    r_sq = noise.pow(2).sum(1).numpy()
    u = r_sq / (r_sq + sigma**2 * aug_dim)
    assert stats.kstest(u, stats.beta(n_dim / 2, aug_dim / 2).cdf).pvalue > 1e-3
    directions = noise / noise.norm(dim=1, keepdim=True)
    assert directions.mean(0).abs().max() < 0.1


def test_kernel_tends_to_the_gaussian_as_d_grows():
    sigma = torch.full((20000,), 1.3)
    kurtosis = {}
    for d in (8, 64, 4096):
        x = pfgmpp.kernel_noise((20000, 4), sigma, d, torch.Generator().manual_seed(d), torch.float64).flatten().numpy()
        kurtosis[d] = stats.kurtosis(x)  # excess kurtosis of a t_D component: 6 / (D - 4)
        assert kurtosis[d] == pytest.approx(6 / (d - 4), abs=0.1 + 6 / (d - 4) * 0.5)
    assert kurtosis[8] > kurtosis[64] > kurtosis[4096] - 0.05
    big_d = pfgmpp.kernel_noise((20000, 4), sigma, 4096, torch.Generator().manual_seed(1), torch.float64)
    assert stats.kstest(big_d.flatten().numpy() / 1.3, "norm").pvalue > 1e-3
    # the r = sigma sqrt(D) alignment: E||x - y||^2 = sigma^2 N D / (D - 2) -> sigma^2 N
    assert big_d.pow(2).sum(1).mean().item() == pytest.approx(1.3**2 * 4 * 4096 / 4094, rel=0.03)


def test_d_inf_is_exactly_the_gaussian_kernel():
    sigma = torch.tensor([0.5, 2.0])
    a = pfgmpp.kernel_noise((2, 3, 4, 4), sigma, math.inf, torch.Generator().manual_seed(0))
    b = torch.randn((2, 3, 4, 4), generator=torch.Generator().manual_seed(0)) * sigma.view(-1, 1, 1, 1)
    torch.testing.assert_close(a, b)


def test_preconditioning_closed_forms_and_unit_variance():
    sigma = torch.tensor([0.002, 0.1, 0.5, 3.0, 80.0], dtype=torch.float64)
    c_skip, c_out, c_in = pfgmpp.edm_preconditioning(sigma, 0.5)
    for i, s in enumerate(sigma.tolist()):
        assert c_skip[i].item() == pytest.approx(0.25 / (s * s + 0.25))
        assert c_out[i].item() == pytest.approx(s * 0.5 / math.sqrt(s * s + 0.25))
        assert c_in[i].item() == pytest.approx(1 / math.sqrt(s * s + 0.25))
    assert pfgmpp.edm_loss_weight(sigma, 0.5).tolist() == pytest.approx((1 / c_out**2).tolist())
    # EDM's design: for data of std sigma_data, the network's input and its effective target have unit variance
    g = torch.Generator().manual_seed(0)
    y = 0.5 * torch.randn(200000, generator=g, dtype=torch.float64)
    for s in (0.1, 2.0):
        x = y + s * torch.randn(200000, generator=g, dtype=torch.float64)
        cs, co, ci = (c.item() for c in pfgmpp.edm_preconditioning(torch.tensor(s, dtype=torch.float64)))
        assert (ci * x).std().item() == pytest.approx(1.0, rel=0.01)
        assert ((y - cs * x) / co).std().item() == pytest.approx(1.0, rel=0.01)


def test_karras_schedule_ends_and_spacing():
    s = pfgmpp.karras_sigmas(18)
    assert s[0].item() == pytest.approx(80.0) and s[-2].item() == pytest.approx(0.002) and s[-1] == 0
    assert torch.all(s[1:] < s[:-1]) and len(s) == 19


def test_prior_radius_law_at_r_max():
    n_dim, d, sigma_max = 6, 10, 5.0
    x = pfgmpp.prior(4000, (n_dim,), sigma_max, d, torch.Generator().manual_seed(3))
    r_sq = x.pow(2).sum(1).numpy()
    assert stats.kstest(r_sq / (r_sq + sigma_max**2 * d), stats.beta(n_dim / 2, d / 2).cdf).pvalue > 1e-3


def test_chi_square_is_exact_across_chunks():
    draws = pfgmpp.chi_square(3000, 70000, torch.Generator().manual_seed(0)).numpy()
    assert np.mean(draws) == pytest.approx(70000, rel=2e-3)
    assert np.var(draws) == pytest.approx(2 * 70000, rel=0.1)
