"""One small class per generative method: the only place where the methods differ.

A method exposes what the trainer and the solvers need and nothing else:
``out_channels(C)``, ``data_batch_size(B)``, ``loss(net, images, labels, generator)``,
``prior(n, generator)``, ``times(steps)`` (its time grid, first to last), ``drift(net, x, t, labels)``
(dx/dt of its backward ODE) and ``solvers`` (the solver names it supports).
"""

from __future__ import annotations

from medpfgm.config import RunConfig
from medpfgm.methods.pfgm import PFGM


def build_method(cfg: RunConfig, image_shape: tuple[int, int, int]):
    """The method object of a resolved run configuration, for images of ``image_shape`` (C, H, W)."""
    if cfg.method == "pfgm":
        return PFGM(cfg.pfgm, image_shape, batch_size=cfg.train.batch_size)
    raise ValueError(f"unknown method {cfg.method!r}")


__all__ = ["PFGM", "build_method"]
