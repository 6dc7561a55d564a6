"""PFGM (D = 1): data on the z = 0 hyperplane of R^(N+1), trained on the empirical Poisson field.

Shapes: images are flattened to (B, N) with N = C*H*W; ``z`` is (B,). Units: pixel values in [-1, 1],
so every distance and norm below is in those units. Nothing here forms ||.||^(N+1) directly: weights
are computed in log space (a softmax), because (1 + 6e-4)^(N+1) already overflows float32 at 224 px.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from medpfgm.physics.pfgmpp import kernel_noise


@dataclass(frozen=True)
class PoissonScales:
    """The data-dependent constants of PFGM: perturbation range M, prior plane z_max, prior clip."""

    m_max: int
    z_max: float
    upper_norm: float


def poisson_scales(mean_norm: float, n_dim: int, sigma: float = 0.01, tau: float = 0.03) -> PoissonScales:
    """The hyper-parameter rule of PFGM (paper App. B.1.1) from the mean data norm and N.

    M = floor(0.75 ln(norm^2 / (2 sqrt(N) sigma^2)) / ln(1 + tau)) + 1 makes the largest perturbations
    reach well past the data; z_max = sqrt(2/pi) sigma (1+tau)^M and upper_norm = sqrt(N) sigma (1+tau)^M
    are E|eps_z| and E||eps_x|| at m = M, i.e. where the largest training perturbations land.
    """
    m_max = int(math.floor(0.75 * math.log(mean_norm**2 / (2 * math.sqrt(n_dim) * sigma**2)) / math.log1p(tau))) + 1
    growth = (1 + tau) ** m_max
    return PoissonScales(m_max, math.sqrt(2 / math.pi) * sigma * growth, math.sqrt(n_dim) * sigma * growth)


def perturb(
    x: torch.Tensor,
    m_max: int,
    sigma: float = 0.01,
    tau: float = 0.03,
    restrict_m: bool = True,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Perturb data points into the augmented space (paper Alg. 2).

    x: (B, N) clean data. Returns y (B, N) and z (B,) > 0 with m ~ U[0, M],
    y = x + ||eps_x|| (1+tau)^m u and z = |eps_z| (1+tau)^m, eps ~ N(0, sigma^2), u uniform on S^(N-1).
    With ``restrict_m``, draws with |eps_z| < sigma/2 take m ~ U[0, floor(0.7 M)] instead, so points
    very close to the plane do not get huge x-norms (official code's restrict_M).
    """
    b, n = x.shape
    opts = dict(generator=generator, device=x.device, dtype=x.dtype)
    eps_x_norm = (torch.randn(b, n, **opts) * sigma).norm(dim=1)
    eps_z = (torch.randn(b, **opts) * sigma).abs()
    direction = torch.randn(b, n, **opts)
    direction = direction / direction.norm(dim=1, keepdim=True)
    m = torch.rand(b, **opts) * m_max
    if restrict_m:
        m_small = torch.rand(b, **opts) * math.floor(0.7 * m_max)
        m = torch.where(eps_z < sigma / 2, m_small, m)
    growth = (1 + tau) ** m
    return x + (eps_x_norm * growth)[:, None] * direction, eps_z * growth


def empirical_field(
    y: torch.Tensor,
    z: torch.Tensor,
    charges: torch.Tensor,
    gamma: float = 5.0,
    chunk_size: int | None = None,
    refine: int = 8,
    labels: torch.Tensor | None = None,
    charge_labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The normalised empirical Poisson field of ``charges`` (on z = 0) at the points (y, z).

    y: (B, N), z: (B,), charges: (B_L, N). With ``labels`` (B,) and ``charge_labels`` (B_L,), each
    point sees only the charges of its own class: the field of the class-conditional data law, which
    is what a class-conditional network must learn; a point labelled -1 sees every charge (the null
    class of classifier-free guidance). Returns (v_x (B, N), v_z (B,)) in ``y.dtype``:
    E = sum_i w_i (x_i, 0) - (y, z) with w = softmax_i(-(N+1)/2 ln d_i^2), d_i^2 = ||y - x_i||^2 + z^2,
    and v = sqrt(N) E / (||E|| + gamma): it points toward the data and has norm ~sqrt(N) far away.

    Cost: two (B, N) x (N, B_L) matrix products in the charges' dtype; memory O(B*B_L + B_L*N), never
    the (B, B_L, N+1) tensor. ``chunk_size`` splits B_L with a running (online) softmax.
    Precision: ||y||^2 + ||x||^2 - 2 y.x cancels when y is near a charge, and the log weight multiplies
    that rounding by (N+1)/2; so the ``refine`` nearest charges of each point (the ones that carry the
    weight) get their distances recomputed from explicit differences, which do not cancel. Log weights
    and sums are float64.
    """
    n_dim, work = y.shape[1], charges.dtype
    y_w, y64, z_sq = y.to(work), y.double(), z.double() ** 2
    y_sq = (y_w * y_w).sum(1, keepdim=True).double() + z_sq[:, None]
    chunk_size = chunk_size or charges.shape[0]
    run_max = torch.full_like(y_sq, -math.inf)
    run_sum = torch.zeros_like(y_sq)
    run_mean = torch.zeros_like(y64)  # sum_i exp(log_w_i - run_max) x_i
    for start in range(0, charges.shape[0], chunk_size):
        c = charges[start : start + chunk_size]
        d_sq = y_sq + (c * c).sum(1).double()[None, :] - 2 * (y_w @ c.T).double()
        if labels is not None:
            same_class = (labels[:, None] == charge_labels[None, start : start + chunk_size]) | (labels[:, None] < 0)
            d_sq = d_sq.masked_fill(~same_class, math.inf)
        if refine:
            near = d_sq.topk(min(refine, c.shape[0]), dim=1, largest=False).indices  # (B, k)
            exact = (y_w[:, None, :] - c[near]).pow(2).sum(-1).double() + z_sq[:, None]
            d_sq = d_sq.scatter(1, near, torch.where(d_sq.gather(1, near).isinf(), math.inf, exact))
        log_w = -0.5 * (n_dim + 1) * d_sq.clamp_min(torch.finfo(torch.float64).tiny).log()
        new_max = torch.maximum(run_max, log_w.max(1, keepdim=True).values)
        rescale = (run_max - new_max).exp().nan_to_num(0.0)  # -inf - -inf: no charge of the class yet
        w = (log_w - new_max).exp().nan_to_num(0.0)
        run_sum = run_sum * rescale + w.sum(1, keepdim=True)
        run_mean = run_mean * rescale + (w.to(work) @ c).double()
        run_max = new_max
    e_x = run_mean / run_sum - y64
    e_z = -z.double()
    scale = math.sqrt(n_dim) / (torch.sqrt((e_x * e_x).sum(1) + e_z * e_z) + gamma)
    return (e_x * scale[:, None]).to(y.dtype), (e_z * scale).to(y.dtype)


def prior(
    n: int,
    n_dim: int,
    z_max: float,
    upper_norm: float,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Starting points of the backward ODE on the plane z = z_max: (n, N).

    The field of any bounded charge distribution is radial far away, so the flow starts from the
    radial projection of the uniform hemisphere: p(x) ∝ (||x||^2 + z_max^2)^(-(N+1)/2), the PFGM++
    kernel with D = 1 and r = z_max, drawn as z_max g / |xi| (a multivariate Cauchy; no Beta(N/2, 1/2)
    draw, which rounds to 1, i.e. R = inf, at N ~ 1e5). Radii are clipped to [1, upper_norm], as in
    the paper: most unclipped radii would lie past the largest perturbations seen in training.
    """
    sigma = torch.full((n,), z_max, dtype=dtype, device=device)
    x = kernel_noise((n, n_dim), sigma, 1, generator, dtype, device)
    norm = x.norm(dim=1, keepdim=True)
    return x * norm.clamp(1.0, upper_norm) / norm


def small_z_vz(v_x: torch.Tensor, z: float | torch.Tensor, gamma: float) -> torch.Tensor:
    """The z-component of the normalised field near the plane, from its x-part (paper App. B.2.3).

    v_x: (B, N). Close to one charge at distance rho, v = sqrt(N) (x_i - y, -z) / (sqrt(rho^2+z^2) + gamma),
    so n = ||v_x|| / sqrt(N) gives rho = gamma n / (1 - n) and v_z = -sqrt(N) z / (sqrt(rho^2 + z^2) + gamma).
    A network's v_z is least reliable exactly there (it is ~z, tiny), hence the analytic replacement.
    """
    n_dim = v_x.shape[1]
    n = (v_x.norm(dim=1) / math.sqrt(n_dim)).clamp(max=1 - 1e-6)
    rho = gamma * n / (1 - n)
    z = torch.as_tensor(z, dtype=v_x.dtype, device=v_x.device)
    return -math.sqrt(n_dim) * z / (torch.sqrt(rho**2 + z**2) + gamma)


def drift_in_lnz(v_x: torch.Tensor, v_z: torch.Tensor, z: float, v_z_max: float = -1e-5) -> torch.Tensor:
    """dx/dt of the backward ODE in t = ln z: z * v_x / v_z, shape (B, N).

    The true field above the plane always points down (v_z < 0); a network output at or above zero
    is clamped to ``v_z_max`` so the ratio stays finite and keeps the flow's direction.
    """
    return z * v_x / v_z.clamp(max=v_z_max)[:, None]


def lnz_grid(z_max: float, z_min: float, steps: int) -> torch.Tensor:
    """steps + 1 times t = ln z, uniform from ln z_max down to ln z_min (float64)."""
    return torch.linspace(math.log(z_max), math.log(z_min), steps + 1, dtype=torch.float64)
