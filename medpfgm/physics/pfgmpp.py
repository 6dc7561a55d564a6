"""PFGM++ (augmented dimension D, any D >= 1; D = inf is EDM diffusion), as pure tensor functions.

Shapes: images (B, C, H, W) or flattened (B, N); sigma (B,) or a float. Units: pixel values in
[-1, 1]. The network sees sigma (not r = sigma sqrt(D)), so EDM's hyper-parameters carry over:
with r = sigma sqrt(D), E||x - y||^2 ~ sigma^2 N for every D (the paper's alignment).
"""

from __future__ import annotations

import math

import torch
from scipy import stats

INF = math.inf


def chi_square(n: int, dof: int, generator: torch.Generator | None = None, dtype=torch.float64, device=None) -> torch.Tensor:
    """(n,) draws of chi^2 with ``dof`` degrees of freedom, summed from normals in bounded chunks (exact)."""
    total = torch.zeros(n, dtype=dtype, device=device)
    for start in range(0, dof, 1 << 15):
        k = min(1 << 15, dof - start)
        total += torch.randn(n, k, generator=generator, dtype=dtype, device=device).pow(2).sum(1)
    return total


def kernel_noise(
    shape: tuple[int, ...],
    sigma: torch.Tensor,
    aug_dim: float,
    generator: torch.Generator | None = None,
    dtype=torch.float32,
    device=None,
) -> torch.Tensor:
    """Draws of x - y under the PFGM++ kernel p_r(x|y) ∝ (||x - y||^2 + r^2)^(-(N+D)/2), r = sigma sqrt(D).

    shape: (B, ...); sigma: (B,). This is a multivariate Student-t with D degrees of freedom:
    x - y = sigma * g * sqrt(D / chi^2_D), g ~ N(0, I_N). No Beta draw and no clip, so training and the
    prior agree at any N / D (the official code's Beta clip cuts 92% of radii at 224 px, D = 128).
    D = inf gives sigma * g, the Gaussian (EDM) kernel.
    """
    g = torch.randn(shape, generator=generator, dtype=dtype, device=device)
    scale = sigma.to(dtype).reshape(-1, *([1] * (len(shape) - 1)))
    if math.isinf(aug_dim):
        return g * scale
    chi2 = chi_square(shape[0], int(aug_dim), generator, torch.float64, device)
    return g * scale * torch.sqrt(aug_dim / chi2).to(dtype).reshape(scale.shape)


def sample_sigma(n: int, p_mean: float, p_std: float, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Training noise levels: ln sigma ~ N(p_mean, p_std^2), shape (n,)."""
    return torch.exp(p_mean + p_std * torch.randn(n, generator=generator, device=device))


def edm_preconditioning(sigma: torch.Tensor, sigma_data: float = 0.5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """EDM's (c_skip, c_out, c_in) for D(x, sigma) = c_skip x + c_out F(c_in x, ...): unit-variance input and target."""
    total = sigma**2 + sigma_data**2
    return sigma_data**2 / total, sigma * sigma_data / total.sqrt(), 1 / total.sqrt()


def edm_loss_weight(sigma: torch.Tensor, sigma_data: float = 0.5) -> torch.Tensor:
    """lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 = 1 / c_out^2."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def karras_sigmas(steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> torch.Tensor:
    """steps + 1 noise levels: sigma_i = (s_max^(1/rho) + i/(steps-1) (s_min^(1/rho) - s_max^(1/rho)))^rho, then 0."""
    i = torch.arange(steps, dtype=torch.float64)
    ramp = i / max(steps - 1, 1)
    sigmas = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)])


def prior(
    n: int, shape: tuple[int, ...], sigma_max: float, aug_dim: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Starting points at r_max = sigma_max sqrt(D): the kernel around the origin at sigma_max, float64 (n, *shape)."""
    sigma = torch.full((n,), sigma_max, dtype=torch.float64)
    return kernel_noise((n, *shape), sigma, aug_dim, generator, dtype=torch.float64)


def drift_in_sigma(x: torch.Tensor, denoised: torch.Tensor, sigma: float) -> torch.Tensor:
    """dx/dsigma = (x - D(x, sigma)) / sigma: the same ODE for every D (only the noise law differs)."""
    return (x - denoised) / sigma


def typical_noise_norm(n_dim: int, aug_dim: float) -> float:
    """The median of ||x - y|| / sigma under the kernel in N = ``n_dim`` dimensions: where noisy points of
    level sigma concentrate (a thin shell when N is large). ||x - y||^2 / sigma^2 = ||g||^2 D / chi^2_D is
    N times an F(N, D) variable (chi^2_N for D = inf), so the median is exact, from scipy."""
    if math.isinf(aug_dim):
        return math.sqrt(stats.chi2(n_dim).median())
    return math.sqrt(n_dim * stats.f(n_dim, aug_dim).median())
