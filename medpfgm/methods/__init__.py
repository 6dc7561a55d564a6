"""One small class per generative method: the only place where the methods differ.

A method exposes what the trainer and the solvers need and nothing else:
``out_channels(C)``, ``data_batch_size(B)``, ``loss(net, images, labels, generator)``,
``prior(n, generator)`` and ``solvers`` (the solver names it supports). ODE methods add ``times(steps)``
(their time grid, first to last), ``t_span()`` (for RK45) and ``drift(net, x, t, labels)`` (dx/dt of
the backward ODE); the DDPM baseline adds ``run_scheduler`` (MONAI's DDPM/DDIM steps) instead.
"""

from __future__ import annotations

from medpfgm.config import RunConfig
from medpfgm.methods.ddpm import DDPM
from medpfgm.methods.pfgm import PFGM
from medpfgm.methods.pfgmpp import PFGMPP
from medpfgm.methods.vapo import VAPO


def build_method(cfg: RunConfig, image_shape: tuple[int, int, int]):
    """The method object of a resolved run configuration, for images of ``image_shape`` (C, H, W)."""
    if cfg.method == "pfgm":
        return PFGM(cfg.pfgm, image_shape, batch_size=cfg.train.batch_size, conditional=cfg.conditional)
    if cfg.method == "pfgmpp":
        return PFGMPP(cfg.pfgmpp, image_shape)
    if cfg.method == "ddpm":
        return DDPM(cfg.ddpm, image_shape)
    if cfg.method == "vapo":
        return VAPO(cfg.vapo, image_shape)
    raise ValueError(f"unknown method {cfg.method!r}")


__all__ = ["DDPM", "PFGM", "PFGMPP", "VAPO", "build_method"]
