"""Feature-space metrics against closed forms and constructed cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai.metrics import FIDMetric

from medpfgm.evaluate.metrics import frechet_distance, kernel_inception_distance, prdc


def gaussian_samples(mean, cov, n, seed):
    """Samples whose empirical mean and covariance are exactly ``mean`` and ``cov`` (whitened, recoloured)."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, len(mean)))
    z = (z - z.mean(0)) @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T
    return torch.from_numpy(z @ np.linalg.cholesky(cov).T + mean)


def test_frechet_distance_closed_form_for_diagonal_gaussians():
    mean_a, mean_b = np.array([0.0, 1.0, -2.0]), np.array([0.5, 1.0, 0.0])
    var_a, var_b = np.array([1.0, 4.0, 0.25]), np.array([2.0, 1.0, 0.25])
    a = gaussian_samples(mean_a, np.diag(var_a), 500, 0)
    b = gaussian_samples(mean_b, np.diag(var_b), 700, 1)
    expected = np.sum((mean_a - mean_b) ** 2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)


def test_frechet_distance_matches_monai_fid_metric():
    rng = np.random.default_rng(2)
    a = torch.from_numpy(rng.standard_normal((400, 6)) @ rng.standard_normal((6, 6)))
    b = torch.from_numpy(rng.standard_normal((300, 6)) @ rng.standard_normal((6, 6)) + 0.3)
    assert frechet_distance(a, b) == pytest.approx(float(FIDMetric()(b, a)), rel=1e-7)


def test_frechet_distance_closed_form_with_singular_covariances():
    # 20 images in 64 dimensions, covariances of rank 10 in a shared random basis (they commute)
    var_a, var_b = np.linspace(0.5, 3.0, 10), np.linspace(2.0, 0.1, 10)
    mean_a, mean_b = np.zeros(10), np.full(10, 0.2)
    q = np.linalg.qr(np.random.default_rng(5).standard_normal((64, 64)))[0]
    embed = lambda x: torch.from_numpy(np.pad(x.numpy(), ((0, 0), (0, 54))) @ q.T)  # noqa: E731
    a, b = embed(gaussian_samples(mean_a, np.diag(var_a), 20, 0)), embed(gaussian_samples(mean_b, np.diag(var_b), 20, 1))
    expected = np.sum((mean_a - mean_b) ** 2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert abs(frechet_distance(a, a)) < 1e-6 * var_a.sum()  # the square roots of round-off eigenvalues


@pytest.mark.parametrize("n", [30, 200])  # fewer images than dimensions (nuclear-norm path), and more (eigen path)
def test_frechet_distance_equals_a_float64_brute_force(n):
    """Against Tr sqrt(S_r^1/2 S_f S_r^1/2) from numpy eigen-decompositions of the d x d covariances."""
    rng = np.random.default_rng(n)
    d = 64
    a = rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) / 8
    b = rng.standard_normal((n + 7, d)) @ rng.standard_normal((d, d)) / 8 + 0.2
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(s_a)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root @ s_b @ root), 0, None)).sum()
    expected = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(s_a) + np.trace(s_b) - 2 * cross
    assert frechet_distance(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(expected, rel=1e-7)  # the reference takes square roots of round-off eigenvalues


def test_identical_sets_give_zero_and_shifts_add_up():
    x = torch.from_numpy(np.random.default_rng(3).standard_normal((300, 8)))
    assert abs(frechet_distance(x, x)) < 1e-8
    shifted = x + torch.full((8,), 0.5, dtype=torch.float64)
    assert frechet_distance(x, shifted) == pytest.approx(8 * 0.25, rel=1e-6)


def test_kid_is_near_zero_for_one_distribution_and_positive_for_two():
    rng = np.random.default_rng(4)
    a, b = (torch.from_numpy(rng.standard_normal((400, 16))) for _ in range(2))
    same, _ = kernel_inception_distance(a, b, subsets=20, subset_size=200)
    diff, spread = kernel_inception_distance(a, b + 1.0, subsets=20, subset_size=200)
    assert abs(same) < 0.05
    assert diff > 0.5 and diff > 10 * spread


def test_kid_equals_the_closed_form_mmd_for_point_masses():
    # all real points at u, all fake at v: unbiased MMD^2 = k(u,u) + k(v,v) - 2 k(u,v)
    u, v = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    real, fake = u.repeat(50, 1), v.repeat(50, 1)

    def k(p, q):
        return (float(p @ q) / 2 + 1) ** 3

    mean, std = kernel_inception_distance(real, fake, subsets=3, subset_size=50)
    assert mean == pytest.approx(k(u, u) + k(v, v) - 2 * k(u, v)) and std < 1e-9


def test_prdc_on_constructed_sets():
    real = torch.tensor([[float(i), 0.0] for i in range(10)])  # a line of points spaced 1 apart
    near = real[:5] + torch.tensor([0.1, 0.0])  # close to the first half only
    far = real + torch.tensor([0.0, 100.0])
    p_near = prdc(real, near, k=2)
    # real balls (k=2) have radius 1 inside the line and 2 at its ends; the fake at 4.1 also covers 5
    assert p_near["precision"] == 1.0 and p_near["coverage"] == 0.6
    assert p_near["recall"] == 0.7  # the end fake ball at 4.1 has radius 2: it reaches real 5 and 6
    p_far = prdc(real, far, k=2)
    assert p_far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    p_same = prdc(real, real.clone(), k=2)
    assert p_same["precision"] == 1.0 and p_same["recall"] == 1.0 and p_same["coverage"] == 1.0
    # ball memberships of the 10 points: 2, 3, 4, 3, 3, 3, 3, 4, 3, 2 (the end balls reach 2 further)
    assert p_same["density"] == pytest.approx(30 / 10 / 2)
