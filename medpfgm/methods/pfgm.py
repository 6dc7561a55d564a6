"""PFGM (D = 1): regress the normalised empirical Poisson field of a large batch; sample in t = ln z."""

from __future__ import annotations

import dataclasses
import math

import torch

from medpfgm.config import SOLVERS, PFGMConfig
from medpfgm.nets import log_timestep
from medpfgm.physics import pfgmpp, poisson

SIGMA_DATA = 0.5  # pixel std of [-1, 1] images, as in EDM: the scale of ``input_scale = "edm"``


def resolve_scales(cfg: PFGMConfig, mean_norm: float, n_dim: int) -> PFGMConfig:
    """Fill m_max, z_max, upper_norm left unset in ``cfg`` by the rule of thumb (returns a copy)."""
    rule = poisson.poisson_scales(mean_norm, n_dim, cfg.sigma, cfg.tau)
    return dataclasses.replace(
        cfg,
        data_norm=mean_norm,
        m_max=cfg.m_max if cfg.m_max is not None else rule.m_max,
        z_max=cfg.z_max if cfg.z_max is not None else rule.z_max,
        upper_norm=cfg.upper_norm if cfg.upper_norm is not None else rule.upper_norm,
    )


class PFGM:
    """The network f(x, z, c) -> (v_x, v_z) predicts the normalised field; its last output channel,
    averaged over pixels, is v_z.

    What the backbone sees is set by the config: ``time_input`` "lnz" maps ln z linearly so that
    z_min -> 0 and z_max -> 1000 (the range of MONAI's sinusoidal embedding), "z" feeds raw z (the
    official code); ``input_scale`` "raw" feeds the point as it is (norms up to upper_norm), "edm"
    multiplies it by 1 / sqrt(z^2 + 0.25), the c_in of PFGM++ at D = 1 (whose kernel is PFGM's with
    r = z). With ``conditional`` False every point sees every charge, whatever its label.
    """

    solvers = SOLVERS["pfgm"]

    def __init__(self, cfg: PFGMConfig, image_shape: tuple[int, int, int], batch_size: int, conditional: bool = True):
        if cfg.z_max is None or cfg.m_max is None or cfg.upper_norm is None:
            raise ValueError("PFGM needs resolved m_max, z_max, upper_norm (see resolve_scales)")
        self.cfg = cfg
        self.image_shape = tuple(image_shape)
        self.n_dim = math.prod(image_shape)
        self.batch_size = batch_size
        self.conditional = conditional

    def out_channels(self, in_channels: int) -> int:
        return in_channels + 1

    def data_batch_size(self, batch_size: int) -> int:
        """Real images one loss call needs: the field batch B_L, whose first B rows are trained on."""
        return max(batch_size, self.cfg.field_batch)

    def field(self, net, x: torch.Tensor, z: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Network field: x (B, C, H, W), z (B,) -> v_x (B, N), v_z (B,)."""
        c, cfg = self.image_shape[0], self.cfg
        if cfg.input_scale == "edm":
            x = x * pfgmpp.edm_preconditioning(z, SIGMA_DATA)[2].view(-1, 1, 1, 1).to(x.dtype)
        timesteps = log_timestep(z, cfg.z_min, cfg.z_max) if cfg.time_input == "lnz" else z.float()
        out = net(x, timesteps=timesteps, class_labels=labels)
        return out[:, :c].flatten(1), out[:, c].mean(dim=(1, 2))

    def loss(self, net, images, labels, generator, part: slice = slice(None), cond=None) -> torch.Tensor:
        """Weighted squared error to the empirical field, (sum_x err^2 + w err_z^2) / (N + w), batch mean.

        images: (B_L, C, H, W) in [-1, 1]; the first B are perturbed, all B_L are charges; the rows ``part``
        of the B are trained on (perturbations are drawn for all B, so any split gives one process's numbers).
        w = ``z_loss_weight`` (default N). The official code uses w = 1, so the scalar v_z is 1/(N+1) of
        the loss and, on short budgets, stays a near-constant; but the ODE's drift is z v_x / v_z, so
        v_z's relative error is the speed's. The weights change no minimiser (each output still
        regresses its own conditional mean), only how fast v_z is learned. ``cond`` (B,): the labels the
        network sees; where it holds the null class (differs from ``labels``) the target is the field of
        every charge, the unconditional one.

        ``loss_reduction`` "half_sum" returns 0.5 x the weighted sum instead of its mean over the N + w
        outputs, (N + w) / 2 times larger (1,177 x at 28 px with w = 1), as the official code does. The
        minimiser is the same; what changes is the recipe's gradient clip (norm 1), which then acts at
        every step: the official run's normalised-gradient training, without touching ``[train]``.
        """
        cfg, b = self.cfg, self.batch_size
        cond = labels[:b] if cond is None else cond
        charges = images.flatten(1)
        y, z = poisson.perturb(charges[:b], cfg.m_max, cfg.sigma, cfg.tau, cfg.restrict_m, generator)
        y, z, net_labels = y[part], z[part], cond[part]
        field_points = torch.where(cond == labels[:b], labels[:b], -1)[part]  # -1: sees every charge
        field_labels = dict(labels=field_points, charge_labels=labels) if self.conditional else {}
        with torch.no_grad(), torch.autocast(y.device.type, enabled=False):  # log-weights of (N+1)-th powers: never bf16
            v_x, v_z = poisson.empirical_field(y, z, charges, cfg.gamma, cfg.field_chunk, **field_labels)
        p_x, p_z = self.field(net, y.view(len(y), *self.image_shape), z, net_labels)
        w = self.n_dim if cfg.z_loss_weight is None else cfg.z_loss_weight
        weighted_sum = ((p_x.float() - v_x).pow(2).sum(1) + w * (p_z.float() - v_z).pow(2)).mean()
        return 0.5 * weighted_sum if cfg.loss_reduction == "half_sum" else weighted_sum / (self.n_dim + w)

    def prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Starting points on the plane z = z_max: float64 (n, C, H, W)."""
        x = poisson.prior(n, self.n_dim, self.cfg.z_max, self.cfg.upper_norm, generator)
        return x.view(n, *self.image_shape)

    def times(self, steps: int) -> torch.Tensor:
        """steps + 1 values of t = ln z, uniform from ln z_max to ln z_min."""
        return poisson.lnz_grid(self.cfg.z_max, self.cfg.z_min, steps)

    def t_span(self) -> tuple[float, float]:
        return math.log(self.cfg.z_max), math.log(self.cfg.z_min)

    def drift(self, net, x: torch.Tensor, t: float, labels: torch.Tensor) -> torch.Tensor:
        """dx/dt at t = ln z for a batch x (B, C, H, W); computed in the network's dtype, returned as x's."""
        z = math.exp(t)
        zs = torch.full((x.shape[0],), z, device=x.device)
        v_x, v_z = self.field(net, x.float(), zs, labels)
        if z < self.cfg.z_exp:
            v_z = poisson.small_z_vz(v_x, z, self.cfg.gamma)
        return poisson.drift_in_lnz(v_x.to(x.dtype), v_z.to(x.dtype), z).view_as(x)
