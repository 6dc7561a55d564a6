"""The shared backbone: MONAI's class-conditional DiffusionModelUNet, sized by a recipe."""

from __future__ import annotations

import math

import torch
from monai.networks.nets import DiffusionModelUNet

from medpfgm.config import NetConfig


def build_unet(cfg: NetConfig, in_channels: int, out_channels: int, num_classes: int | None) -> DiffusionModelUNet:
    """A 2-D class-conditional UNet: forward(x (B, C, H, W), timesteps (B,) float, class_labels (B,) int).

    ``num_classes`` None builds it unconditional: it has no class embedding and ignores ``class_labels``.

    MONAI embeds ``timesteps`` with the DDPM sinusoids built for integers 0..1000; each method maps its
    own noise level (ln z, ln sigma, DDPM step) into that range.
    """
    return DiffusionModelUNet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=list(cfg.channels),
        num_res_blocks=cfg.num_res_blocks,
        attention_levels=list(cfg.attention_levels),
        norm_num_groups=cfg.norm_num_groups,
        num_head_channels=cfg.num_head_channels,
        num_class_embeds=num_classes,
    )


def log_timestep(level: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Map a positive noise level (z or sigma) log-linearly so that ``low`` -> 0 and ``high`` -> 1000,
    the range MONAI's sinusoidal time embedding is built for. level: (B,) -> (B,) float32."""
    lo, hi = math.log(low), math.log(high)
    return (1000.0 * (level.log() - lo) / (hi - lo)).float()


def count_parameters(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
