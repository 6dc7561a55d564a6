"""The DDPM baseline: epsilon prediction on the same UNet, MONAI's DDPM (ancestral) and DDIM schedulers.

MONAI's DiffusionInferer does not pass ``class_labels`` to the network, so the conditional loop is
written once here, over MONAI's scheduler ``step``.
"""

from __future__ import annotations

import math

import torch
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

from medpfgm.config import SOLVERS, DDPMConfig
from medpfgm.methods.base import ImageMethod
from medpfgm.physics import pfgmpp


class DDPM(ImageMethod):
    solvers = SOLVERS["ddpm"]

    def __init__(self, cfg: DDPMConfig, image_shape: tuple[int, int, int]):
        super().__init__(cfg, image_shape)
        self.train_scheduler = self.scheduler("ddpm")

    def scheduler(self, solver: str) -> DDPMScheduler | DDIMScheduler:
        cfg = self.cfg
        kwargs = dict(
            num_train_timesteps=cfg.num_train_timesteps,
            schedule=cfg.schedule,
            beta_start=cfg.beta_start,
            beta_end=cfg.beta_end,
            clip_sample=cfg.clip_sample,
        )
        return DDPMScheduler(**kwargs) if solver == "ddpm" else DDIMScheduler(**kwargs)

    def loss(self, net, images, labels, generator, part: slice = slice(None), cond=None) -> torch.Tensor:
        """||eps_theta(x_t, t, c) - eps||^2 with t ~ U{0..T-1}, mean over pixels and the rows ``part``
        (the randomness is drawn for the whole batch, so the rows of any split are those of one process).
        ``cond`` (B,): the labels the network sees (the null class where dropped); default ``labels``."""
        labels = labels if cond is None else cond
        t = torch.randint(0, self.cfg.num_train_timesteps, (len(images),), generator=generator, device=images.device)[part]
        noise = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)[part]
        noisy = self.train_scheduler.add_noise(images[part], noise, t)
        return (net(noisy, timesteps=t, class_labels=labels[part]).float() - noise).pow(2).mean()

    def prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn((n, *self.image_shape), generator=generator)

    def run_scheduler(self, net, x, labels, solver: str, steps: int, generator: torch.Generator, project: bool = False) -> torch.Tensor:
        """The reverse chain from x ~ N(0, I) (B, C, H, W): ``steps`` scheduler steps, one network call each.

        ddpm: ancestral sampling over all T training steps, or over ``steps`` < T strided steps as
        DDIM with eta = 1 (the ancestral chain on a sub-sequence: MONAI's DDPMScheduler.step always
        steps from t to t - 1, so on a strided schedule it would jump noise levels without
        accounting for them); ddim: deterministic (eta = 0). One network evaluation per step.
        ``project``: before each step, x_t moves to where noisy points of its level concentrate, at the
        median norm of N(0, I) noise from sqrt(alpha_bar) x0_hat along the predicted noise, x0_hat kept
        (the projection step, as for PFGM++; no extra network call).
        """
        radius = pfgmpp.typical_noise_norm(math.prod(self.image_shape), math.inf)
        steps = min(steps, self.cfg.num_train_timesteps)
        strided_ancestral = solver == "ddpm" and steps < self.cfg.num_train_timesteps
        scheduler = self.scheduler("ddim" if strided_ancestral else solver)
        scheduler.set_timesteps(steps, device=x.device)
        eta = {} if isinstance(scheduler, DDPMScheduler) else {"eta": 1.0 if strided_ancestral else 0.0}
        device_gen = torch.Generator(device=x.device).manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
        x = x.float()
        for t in scheduler.timesteps:
            eps = net(x, timesteps=t.expand(len(x)).to(x.device), class_labels=labels).float()
            if project:  # move x to the typical shell around sqrt(alpha_bar) x0_hat, keeping x0_hat
                on_shell = eps * (radius / eps.flatten(1).norm(dim=1).clamp_min(1e-12)).view(-1, *([1] * (eps.dim() - 1)))
                x = x + (1 - scheduler.alphas_cumprod[int(t)].item()) ** 0.5 * (on_shell - eps)
                eps = on_shell
            x, _ = scheduler.step(eps, int(t), x, generator=device_gen, **eta)
        return x
