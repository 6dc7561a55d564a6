"""VAPO, variational potential flow (Loo et al. 2024, arXiv 2407.15238): the velocity is the gradient of a
learned scalar potential, dx/dt = grad_x psi(x, t), from noise at t = 0 to data at t = 1.

What is built: psi(x, t) = -||x - U(x, t)||^2 / (2 s(t)), s(t) = max(1 - t, scale_floor), from the shared
UNet U (so that grad psi is about (U - x) / (1 - t): U plays a denoiser's part), trained on the path
x_t = t x0 + (1 - t) eps with the flow-matching term of VAPO's homotopy loss,
||grad_x psi(x_t, t) - (x0 - eps)||^2, whose gradient needs a double backward.

Why the floor: without it an error d in U is a velocity error d / (1 - t), so a sample at t = 0.999 weighs
10^6 times one at t = 0 in the loss; the first BloodMNIST steps gave losses of 3 to 1,200 from batch to
batch, gradient norms up to 12,000. The floor 0.05 bounds that factor at 400 (the clamp of Li & He's
x-prediction flow models, "Back to Basics", 2025); the flow keeps the same minimiser.

VAPO's covariance and norm regularisers (the authors' code, ljun0004/VAPO) are not built. Sampling integrates
the ODE with any of the shared solvers, RK45 by default.
"""

from __future__ import annotations

import torch

from medpfgm.config import SOLVERS, VAPOConfig
from medpfgm.methods.base import ImageMethod


class VAPO(ImageMethod):
    solvers = SOLVERS["vapo"]

    def potential(self, net, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """psi(x, t): x (B, C, H, W), t (B,) in [0, 1) -> (B,)."""
        u = net(x, timesteps=(1000.0 * t).float(), class_labels=labels).to(x.dtype)  # x's dtype: float64 checks stay float64
        return -(x - u).flatten(1).pow(2).sum(1) / (2 * (1 - t.to(x.dtype)).clamp(min=self.cfg.scale_floor))

    def velocity(self, net, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
        """grad_x psi(x, t) (B, C, H, W) by autograd; ``create_graph`` keeps it differentiable (training)."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.potential(net, x, t, labels).sum(), x, create_graph=create_graph)
        return grad

    def loss(self, net, images, labels, generator, part: slice = slice(None), cond=None) -> torch.Tensor:
        """||grad psi(x_t, t) - (x0 - eps)||^2, mean over pixels and the rows ``part`` (t ~ U(0, 1 - t_eps)
        and eps drawn for the whole batch, so any split of the rows gives one process's numbers)."""
        labels = labels if cond is None else cond
        t = torch.rand(len(images), generator=generator, device=images.device) * (1 - self.cfg.t_eps)
        eps = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
        images, eps, t = images[part], eps[part], t[part]
        x_t = t.view(-1, 1, 1, 1) * images + (1 - t.view(-1, 1, 1, 1)) * eps
        v = self.velocity(net, x_t, t, labels[part], create_graph=True)
        return (v - (images - eps)).pow(2).mean()

    def prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn((n, *self.image_shape), generator=generator)

    def times(self, steps: int) -> torch.Tensor:
        """steps + 1 times, uniform from 0 to 1 - t_eps."""
        return torch.linspace(0.0, 1 - self.cfg.t_eps, steps + 1, dtype=torch.float64)

    def t_span(self) -> tuple[float, float]:
        return 0.0, 1 - self.cfg.t_eps

    def drift(self, net, x: torch.Tensor, t: float, labels: torch.Tensor) -> torch.Tensor:
        ts = torch.full((x.shape[0],), t, device=x.device)
        return self.velocity(net, x, ts, labels).to(x.dtype)


__all__ = ["VAPO"]
