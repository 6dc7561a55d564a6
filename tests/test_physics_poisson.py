"""PFGM physics against independent computations: float64 brute force, closed forms, Monte Carlo."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from medpfgm.data import load_split, to_unit_range
from medpfgm.physics import poisson


def brute_force_field(y, z, charges, gamma, labels=None, charge_labels=None):
    """Direct float64 sum over explicit difference vectors in R^(N+1) (the (B, B_L, N+1) tensor)."""
    y_aug = torch.cat([y, z[:, None]], 1).double()
    c_aug = torch.cat([charges, torch.zeros(len(charges), 1, dtype=charges.dtype)], 1).double()
    diff = c_aug[None, :, :] - y_aug[:, None, :]  # toward the charges
    n_dim = y.shape[1]
    log_w = -(n_dim + 1) * diff.norm(dim=2).log()
    if labels is not None:
        log_w = log_w.masked_fill(labels[:, None] != charge_labels[None, :], -math.inf)
    w = torch.softmax(log_w, dim=1)
    e = (w[:, :, None] * diff).sum(1)
    v = math.sqrt(n_dim) * e / (e.norm(dim=1, keepdim=True) + gamma)
    return v[:, :-1], v[:, -1]


@pytest.mark.parametrize("n_dim", [3, 50])
def test_field_matches_brute_force_small_n(n_dim):
    g = torch.Generator().manual_seed(n_dim)
    charges = torch.rand(40, n_dim, generator=g, dtype=torch.float64) * 2 - 1
    y = charges[:6] + 0.3 * torch.randn(6, n_dim, generator=g, dtype=torch.float64)
    z = torch.rand(6, generator=g, dtype=torch.float64) + 0.05
    v_x, v_z = poisson.empirical_field(y, z, charges, gamma=5.0)
    ref_x, ref_z = brute_force_field(y, z, charges, 5.0)
    torch.testing.assert_close(v_x, ref_x, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(v_z, ref_z, rtol=1e-9, atol=1e-10)


def test_field_matches_brute_force_on_real_images_with_chunks_and_classes(data_root):
    split = load_split("bloodmnist", 28, "train", data_root)
    charges = to_unit_range(split.images[:96]).flatten(1).double()
    labels = torch.as_tensor(split.labels[:96])
    y, z = poisson.perturb(charges[:8], m_max=289, generator=torch.Generator().manual_seed(1))
    ref_x, ref_z = brute_force_field(y, z, charges, 5.0, labels[:8], labels)
    for chunk in (None, 17):
        v_x, v_z = poisson.empirical_field(y, z, charges, 5.0, chunk, labels=labels[:8], charge_labels=labels)
        torch.testing.assert_close(v_x, ref_x, rtol=1e-7, atol=1e-8)
        torch.testing.assert_close(v_z, ref_z, rtol=1e-7, atol=1e-8)
    assert y.shape[1] == 2352


def test_float32_inputs_keep_float64_accuracy_near_a_charge():
    """Near a charge the matmul expansion cancels; the float64 default must still match brute force."""
    g = torch.Generator().manual_seed(3)
    charges = (torch.rand(64, 2352, generator=g) * 2 - 1).float()
    y = charges[:4] + 1e-3 * torch.randn(4, 2352, generator=g)
    z = torch.full((4,), 1e-3)
    v_x, _ = poisson.empirical_field(y, z, charges)
    ref_x, _ = brute_force_field(y.double(), z.double(), charges.double(), 5.0)
    torch.testing.assert_close(v_x.double(), ref_x, rtol=1e-4, atol=1e-5)


def test_field_is_radial_with_norm_sqrt_n_far_away():
    n_dim = 2352
    g = torch.Generator().manual_seed(0)
    charges = torch.rand(128, n_dim, generator=g, dtype=torch.float64) * 2 - 1
    direction = torch.randn(4, n_dim, generator=g, dtype=torch.float64)
    y = 1e5 * direction / direction.norm(dim=1, keepdim=True)
    z = torch.full((4,), 1e3, dtype=torch.float64)
    v_x, v_z = poisson.empirical_field(y, z, charges, gamma=5.0)
    v = torch.cat([v_x, v_z[:, None]], 1)
    outward = torch.cat([y, z[:, None]], 1)
    cosine = (v * outward).sum(1) / (v.norm(dim=1) * outward.norm(dim=1))
    assert torch.all(cosine < -0.9999)  # points back toward the data
    torch.testing.assert_close(v.norm(dim=1), torch.full((4,), math.sqrt(n_dim), dtype=torch.float64), rtol=1e-3, atol=0)


@pytest.mark.parametrize("n_dim", [2, 9])
def test_prior_radii_follow_the_analytic_law(n_dim):
    z_max = 3.0
    x = poisson.prior(4000, n_dim, z_max, upper_norm=1e12, generator=torch.Generator().manual_seed(n_dim))
    radii = x.norm(dim=1).numpy()
    radii = radii[radii > 1.0]  # below 1 the prior is clipped up to 1
    # p(R) ∝ R^(N-1) / (R^2 + z_max^2)^((N+1)/2)  <=>  R^2/(R^2+z_max^2) ~ Beta(N/2, 1/2)
    cdf_at_1 = stats.beta.cdf(1 / (1 + z_max**2), n_dim / 2, 0.5)

    def conditional_cdf(r):
        return (stats.beta.cdf(r**2 / (r**2 + z_max**2), n_dim / 2, 0.5) - cdf_at_1) / (1 - cdf_at_1)

    assert stats.kstest(radii, conditional_cdf).pvalue > 1e-3
    directions = x / x.norm(dim=1, keepdim=True)
    assert directions.mean(0).abs().max() < 0.1  # isotropic


def test_prior_is_finite_and_clipped_at_224px():
    n_dim = 224 * 224 * 3
    x = poisson.prior(6, n_dim, z_max=174.0, upper_norm=8.5e4, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(x).all()
    assert torch.all(x.norm(dim=1) <= 8.5e4 * (1 + 1e-9))


def test_largest_perturbations_reach_upper_norm():
    """The rule's upper_norm is E||eps_x|| (1+tau)^M: the biggest perturbations land there."""
    x = torch.zeros(20000, 2352)
    scales = poisson.poisson_scales(mean_norm=28.9, n_dim=2352)
    y, z = poisson.perturb(x, scales.m_max, restrict_m=False, generator=torch.Generator().manual_seed(0))
    largest = y.norm(dim=1).max().item()
    assert 0.9 * scales.upper_norm < largest < 1.1 * scales.upper_norm
    assert torch.all(z > 0)
    # E|eps_z| (1+tau)^M = z_max: the mean of the top-m draws is close to it
    assert z.max().item() > scales.z_max


def test_restrict_m_caps_the_growth_of_points_near_the_plane():
    x = torch.zeros(20000, 16)
    sigma, tau, m_max = 0.01, 0.03, 300
    g = torch.Generator().manual_seed(0)
    y, z = poisson.perturb(x, m_max, sigma, tau, restrict_m=True, generator=g)
    ratio = z / y.norm(dim=1)  # |eps_z| / ||eps_x||, independent of m
    eps_x_norm_bound = sigma * math.sqrt(16) * 3  # ||eps_x|| rarely exceeds 3 sigma sqrt(N) at N=16
    near = ratio * eps_x_norm_bound < sigma / 2  # surely |eps_z| < sigma/2 there
    growth_cap = (1 + tau) ** math.floor(0.7 * m_max)
    assert near.sum() > 100
    assert torch.all(z[near] < sigma / 2 * growth_cap)


def test_small_z_formula_matches_the_exact_field_of_one_charge():
    g = torch.Generator().manual_seed(0)
    charge = torch.randn(1, 100, generator=g, dtype=torch.float64)
    y = charge + 0.2 * torch.randn(5, 100, generator=g, dtype=torch.float64)
    z = torch.full((5,), 0.01, dtype=torch.float64)
    v_x, v_z = poisson.empirical_field(y, z, charge, gamma=5.0)
    # the formula infers rho as if z = 0: exact up to a relative O(z^2 / rho^2) ~ 1e-5 here
    torch.testing.assert_close(poisson.small_z_vz(v_x, 0.01, 5.0), v_z, rtol=1e-4, atol=0)


def test_drift_moves_toward_the_charge_as_ln_z_decreases():
    charge = torch.zeros(1, 10, dtype=torch.float64)
    y = torch.ones(1, 10, dtype=torch.float64)
    z = 0.5
    v_x, v_z = poisson.empirical_field(y, torch.tensor([z], dtype=torch.float64), charge)
    step = -0.1 * poisson.drift_in_lnz(v_x, v_z, z)  # dt < 0
    assert (y + step).norm() < y.norm()
    assert poisson.drift_in_lnz(v_x, torch.tensor([0.3], dtype=torch.float64), z).isfinite().all()  # wrong-sign v_z clamped
