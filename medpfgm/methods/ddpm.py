"""The DDPM baseline: epsilon prediction on the same UNet, MONAI's DDPM (ancestral) and DDIM schedulers.

MONAI's DiffusionInferer does not pass ``class_labels`` to the network, so the conditional loop is
written once here, over MONAI's scheduler ``step``.
"""

from __future__ import annotations

import torch
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

from medpfgm.config import SOLVERS, DDPMConfig


class DDPM:
    solvers = SOLVERS["ddpm"]

    def __init__(self, cfg: DDPMConfig, image_shape: tuple[int, int, int]):
        self.cfg = cfg
        self.image_shape = tuple(image_shape)
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

    def out_channels(self, in_channels: int) -> int:
        return in_channels

    def data_batch_size(self, batch_size: int) -> int:
        return batch_size

    def loss(self, net, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator, part: slice = slice(None)) -> torch.Tensor:
        """||eps_theta(x_t, t, c) - eps||^2 with t ~ U{0..T-1}, mean over pixels and the rows ``part``
        (the randomness is drawn for the whole batch, so the rows of any split are those of one process)."""
        t = torch.randint(0, self.cfg.num_train_timesteps, (len(images),), generator=generator, device=images.device)[part]
        noise = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)[part]
        noisy = self.train_scheduler.add_noise(images[part], noise, t)
        return (net(noisy, timesteps=t, class_labels=labels[part]).float() - noise).pow(2).mean()

    def prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn((n, *self.image_shape), generator=generator)

    def run_scheduler(self, net, x: torch.Tensor, labels: torch.Tensor, solver: str, steps: int, generator: torch.Generator) -> torch.Tensor:
        """The reverse chain from x ~ N(0, I) (B, C, H, W): ``steps`` scheduler steps, one network call each.

        ddpm: ancestral sampling over all T training steps, or over ``steps`` < T strided steps as
        DDIM with eta = 1 (the ancestral chain on a sub-sequence: MONAI's DDPMScheduler.step always
        steps from t to t - 1, so on a strided schedule it would jump noise levels without
        accounting for them); ddim: deterministic (eta = 0). One network evaluation per step.
        """
        steps = min(steps, self.cfg.num_train_timesteps)
        strided_ancestral = solver == "ddpm" and steps < self.cfg.num_train_timesteps
        scheduler = self.scheduler("ddim" if strided_ancestral else solver)
        scheduler.set_timesteps(steps, device=x.device)
        eta = {} if isinstance(scheduler, DDPMScheduler) else {"eta": 1.0 if strided_ancestral else 0.0}
        device_gen = torch.Generator(device=x.device).manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
        x = x.float()
        for t in scheduler.timesteps:
            eps = net(x, timesteps=t.expand(len(x)).to(x.device), class_labels=labels).float()
            x, _ = scheduler.step(eps, int(t), x, generator=device_gen, **eta)
        return x
