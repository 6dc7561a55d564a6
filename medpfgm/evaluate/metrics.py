"""Distances between two sets of feature vectors (n, d): real vs synthetic, or real vs real.

All take float feature matrices and work in float64. The Fréchet distance is FID's formula (tested
against MONAI's `FIDMetric`, which fails on singular covariances); KID and PRDC follow their papers
(Bińkowski et al. 2018; Naeem et al. 2020).
"""

from __future__ import annotations

import numpy as np
import torch


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^(1/2)) of Gaussians fitted to (n, d) features.

    Tr (S_r S_f)^(1/2) is computed exactly without the non-symmetric ``sqrtm`` that MONAI's FIDMetric
    uses (it raises on the imaginary round-off of singular covariances: per-class sets of 20-60 images).
    With S = A Aᵀ, A the centred features / sqrt(n - 1) (d x n), the non-zero eigenvalues of S_r S_f
    are the squared singular values of M = A_rᵀ A_f (n_r x n_f), so the trace is M's nuclear norm:
    an (n_r x n_f) problem, far cheaper than d x d when there are fewer images than dimensions (400
    images in Inception's 2048-d space). With more images, two symmetric eigen-decompositions of d x d
    matrices give the same trace.
    """
    real, fake = real.double(), fake.double()
    a_r, a_f = ((x - x.mean(0)) / max(len(x) - 1, 1) ** 0.5 for x in (real, fake))
    mean_term = (real.mean(0) - fake.mean(0)).square().sum()
    if len(real) * len(fake) <= real.shape[1] ** 2:
        cross = torch.linalg.svdvals(a_r @ a_f.T).sum()
    else:
        s_r, s_f = a_r.T @ a_r, a_f.T @ a_f
        w, v = torch.linalg.eigh(s_r)
        root_r = (v * w.clamp(min=0).sqrt()) @ v.T
        cross = torch.linalg.eigvalsh(root_r @ s_f @ root_r).clamp(min=0).sqrt().sum()
    return float(mean_term + a_r.square().sum() + a_f.square().sum() - 2 * cross)


def kernel_inception_distance(
    real: torch.Tensor, fake: torch.Tensor, subsets: int = 10, subset_size: int = 100, seed: int = 0
) -> tuple[float, float]:
    """Unbiased MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3: (mean, std) over random subsets."""
    rng = np.random.default_rng(seed)
    real, fake = real.double(), fake.double()
    m = min(subset_size, len(real), len(fake))
    d = real.shape[1]
    values = []
    for _ in range(subsets):
        x = real[torch.from_numpy(rng.choice(len(real), m, replace=False))]
        y = fake[torch.from_numpy(rng.choice(len(fake), m, replace=False))]
        k_xx, k_yy, k_xy = ((a @ b.T / d + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
        off_diag = (k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
        values.append(float(off_diag - 2 * k_xy.mean()))
    return float(np.mean(values)), float(np.std(values))


def prdc(real: torch.Tensor, fake: torch.Tensor, k: int = 5) -> dict[str, float]:
    """Precision, recall, density and coverage with k-nearest-neighbour balls (Naeem et al. 2020).

    precision: share of fake points inside some real point's k-NN ball; recall: share of real points
    inside some fake point's k-NN ball; density: mean number of real balls holding a fake point, / k;
    coverage: share of real balls that hold at least one fake point.
    """
    real, fake = real.double(), fake.double()
    real_radius = _kth_neighbour_distance(real, k)
    fake_radius = _kth_neighbour_distance(fake, k)
    real_fake = torch.cdist(real, fake)  # (n_real, n_fake)
    inside_real = real_fake <= real_radius[:, None]
    return {
        "precision": inside_real.any(0).double().mean().item(),
        "recall": (real_fake <= fake_radius[None, :]).any(1).double().mean().item(),
        "density": (inside_real.sum(0).double() / k).mean().item(),
        "coverage": (real_fake.min(1).values <= real_radius).double().mean().item(),
    }


def _kth_neighbour_distance(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each row to its k-th nearest other row: (n,)."""
    return torch.cdist(x, x).kthvalue(k + 1, dim=1).values  # +1: the row itself is at distance 0
