"""Shared fixtures: real 28-px images from ../shared/data, tiny recipes, small MedMNIST-format files."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from medpfgm.physics import poisson

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DATA_ROOT = Path(os.environ.get("MEDPFGM_DATA", SHARED_DATA))

TINY_RECIPE = (Path(__file__).resolve().parents[1] / "recipes" / "tiny.toml").read_text()


@pytest.fixture(scope="session")
def data_root() -> Path:
    if not (DATA_ROOT / "bloodmnist.npz").is_file():
        pytest.skip(f"real data not found in {DATA_ROOT}")
    return DATA_ROOT


def write_tiny_recipe(path: Path, method: str = "pfgm") -> Path:
    text = TINY_RECIPE.replace('method = "pfgm"', f'method = "{method}"')
    path.write_text(text.replace('solver = "euler"', 'solver = "ddim"') if method == "ddpm" else text)  # a solver of the method
    return path


@pytest.fixture
def tiny_recipe(tmp_path) -> Path:
    return write_tiny_recipe(tmp_path / "tiny.toml")


@pytest.fixture(autouse=True)
def _data_env(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("MEDPFGM_DATA", str(DATA_ROOT))
    monkeypatch.setenv("MEDPFGM_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))  # never the user's feature cache
    torch.set_num_threads(1)  # small tensors: one thread is as fast and leaves a core free


def write_medmnist_npz(path: Path, size: int, n_classes: int, per_split: int = 12, channels: int = 3, seed: int = 0) -> Path:
    """A small MedMNIST-layout file: {split}_images uint8 (n, H, W, C) and {split}_labels uint8 (n, 1)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = rng.integers(0, 256, (per_split, size, size, channels), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(per_split) % n_classes).astype(np.uint8)[:, None]
    np.savez(path, **arrays)
    return path


class OracleNet(torch.nn.Module):
    """Stands in for the network: the exact empirical field of fixed charges, in the network's output
    layout (B, C + 1, H, W) with v_z in the last channel. Reads z (and x) back from what the method fed
    the network, by the method's ``time_input`` and ``input_scale``."""

    def __init__(self, method, charges: torch.Tensor, charge_labels: torch.Tensor):
        super().__init__()
        self.method, self.charges, self.charge_labels = method, charges.double(), charge_labels

    def forward(self, x, timesteps, class_labels):
        cfg = self.method.cfg
        if cfg.time_input == "z":
            z = timesteps.double()
        else:
            lo, hi = math.log(cfg.z_min), math.log(cfg.z_max)
            z = torch.exp(timesteps.double() / 1000 * (hi - lo) + lo)
        if cfg.input_scale == "edm":  # the method fed x / sqrt(z^2 + 0.25)
            x = x.double() * torch.sqrt(z**2 + 0.25).view(-1, 1, 1, 1)
        v_x, v_z = poisson.empirical_field(
            x.flatten(1).double(), z, self.charges, cfg.gamma, labels=class_labels, charge_labels=self.charge_labels
        )
        b, c, h, w = x.shape
        return torch.cat([v_x.view(b, c, h, w), v_z.view(b, 1, 1, 1).expand(b, 1, h, w)], 1).float()


def posterior_mean(x: torch.Tensor, data: torch.Tensor, log_kernel) -> torch.Tensor:
    """E[y | x] over a finite data set, float64: softmax_i(log_kernel(||x - y_i||^2)) @ data.

    x: (B, N), data: (K, N); log_kernel maps squared distances (B, K) to log weights.
    """
    d_sq = torch.cdist(x.double(), data.double()).pow(2)
    return torch.softmax(log_kernel(d_sq), dim=1) @ data.double()


class OracleDenoiser(torch.nn.Module):
    """Stands in for the PFGM++ network: F such that c_skip x + c_out F is the exact posterior mean
    of a toy data set under the PFGM++ kernel (Student-t, D), or the Gaussian one for D = inf."""

    def __init__(self, method, data: torch.Tensor):
        super().__init__()
        self.method, self.data = method, data.double()

    def forward(self, x_in, timesteps, class_labels):
        from medpfgm.physics import pfgmpp

        cfg, d = self.method.cfg, self.method.aug_dim
        lo, hi = math.log(cfg.sigma_min), math.log(cfg.sigma_max)
        sigma = torch.exp(timesteps.double() / 1000 * (hi - lo) + lo)
        c_skip, c_out, c_in = pfgmpp.edm_preconditioning(sigma, cfg.sigma_data)
        x = x_in.double().flatten(1) / c_in[:, None]
        if math.isinf(d):
            log_kernel = lambda d_sq: -d_sq / (2 * sigma[:, None] ** 2)  # noqa: E731
        else:
            log_kernel = lambda d_sq: -0.5 * (x.shape[1] + d) * torch.log(d_sq + d * sigma[:, None] ** 2)  # noqa: E731
        denoised = posterior_mean(x, self.data, log_kernel)
        return ((denoised - c_skip[:, None] * x) / c_out[:, None]).view_as(x_in).float()


class OracleEpsilon(torch.nn.Module):
    """Stands in for the DDPM network: the exact epsilon of a toy data set at each integer timestep."""

    def __init__(self, method, data: torch.Tensor):
        super().__init__()
        self.alphas_cumprod = method.train_scheduler.alphas_cumprod.double()
        self.data = data.double()

    def forward(self, x_t, timesteps, class_labels):
        a = self.alphas_cumprod[timesteps.long().cpu()][:, None]
        x = x_t.double().flatten(1)
        mean = posterior_mean(x / a.sqrt(), self.data, lambda d_sq: -d_sq * a / (2 * (1 - a)))
        return ((x - a.sqrt() * mean) / (1 - a).sqrt()).view_as(x_t).float()
