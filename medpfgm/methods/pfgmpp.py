"""PFGM++ (any D; D = inf is EDM): an x0 (denoiser) regression under the PFGM++ kernel, EDM-preconditioned.

D = 1 here is the PFGM kernel (perturbation ∝ (||x - y||^2 + sigma^2)^(-(N+1)/2)) trained with the
per-sample objective of PFGM++: the target is the clean image, not PFGM's empirical field of a
large batch, so D = 1 here and ``--method pfgm`` share the ODE family but not the estimator.
"""

from __future__ import annotations

import math

import torch

from medpfgm.config import SOLVERS, PFGMPPConfig, parse_aug_dim
from medpfgm.methods.base import ImageMethod
from medpfgm.nets import log_timestep
from medpfgm.physics import pfgmpp


class PFGMPP(ImageMethod):
    """D_theta(x, sigma, c) = c_skip x + c_out F(c_in x, sigma, c); the ODE is dx/dsigma = (x - D_theta) / sigma."""

    solvers = SOLVERS["pfgmpp"]

    def __init__(self, cfg: PFGMPPConfig, image_shape: tuple[int, int, int]):
        super().__init__(cfg, image_shape)
        self.aug_dim = parse_aug_dim(cfg.aug_dim)

    def denoise(self, net, x: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) float32, sigma (B,) -> D_theta (B, C, H, W)."""
        c_skip, c_out, c_in = (c.view(-1, 1, 1, 1) for c in pfgmpp.edm_preconditioning(sigma, self.cfg.sigma_data))
        timesteps = log_timestep(sigma, self.cfg.sigma_min, self.cfg.sigma_max)
        return c_skip * x + c_out * net(c_in * x, timesteps=timesteps, class_labels=labels).float()

    def loss(self, net, images, labels, generator, part: slice = slice(None), cond=None) -> torch.Tensor:
        """lambda(sigma) ||D_theta(y + n, sigma) - y||^2, mean over pixels and the rows ``part``; n ~ the
        PFGM++ kernel (drawn for the whole batch: any split of the rows gives one process's numbers).
        ``cond`` (B,): the labels the network sees (the null class where dropped); default ``labels``."""
        cfg, labels = self.cfg, labels if cond is None else cond
        sigma = pfgmpp.sample_sigma(len(images), cfg.p_mean, cfg.p_std, generator, images.device)
        noise = pfgmpp.kernel_noise(images.shape, sigma, self.aug_dim, generator, images.dtype, images.device)
        images, noise, sigma = images[part], noise[part], sigma[part]
        denoised = self.denoise(net, images + noise, sigma, labels[part])
        weight = pfgmpp.edm_loss_weight(sigma, cfg.sigma_data).view(-1, 1, 1, 1)
        return (weight * (denoised - images).pow(2)).mean()

    def prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return pfgmpp.prior(n, self.image_shape, self.cfg.sigma_max, self.aug_dim, generator)

    def times(self, steps: int) -> torch.Tensor:
        """steps + 1 noise levels of EDM's rho-schedule, sigma_max ... sigma_min, 0."""
        return pfgmpp.karras_sigmas(steps, self.cfg.sigma_min, self.cfg.sigma_max, self.cfg.rho)

    def typical_noise_norm(self) -> float:
        """Median ||x - y|| / sigma of the kernel at this image size: the shell the projection step keeps."""
        return pfgmpp.typical_noise_norm(math.prod(self.image_shape), self.aug_dim)

    def t_span(self) -> tuple[float, float]:
        return self.cfg.sigma_max, self.cfg.sigma_min

    def drift(self, net, x: torch.Tensor, t: float, labels: torch.Tensor) -> torch.Tensor:
        sigma = torch.full((x.shape[0],), t, device=x.device)
        denoised = self.denoise(net, x.float(), sigma, labels)
        return pfgmpp.drift_in_sigma(x, denoised.to(x.dtype), t)


__all__ = ["PFGMPP"]
