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

TINY_RECIPE = """
method = "pfgm"
dataset = "bloodmnist"
size = 28
seed = 0
[net]
channels = [16, 32]
num_res_blocks = 1
attention_levels = [false, false]
norm_num_groups = 8
num_head_channels = 16
[train]
steps = 6
batch_size = 16
lr = 1e-3
warmup_steps = 1
log_every = 1
checkpoint_every = 3
[pfgm]
field_batch = 128
[sample]
solver = "euler"
steps = 8
batch_size = 16
"""


@pytest.fixture(scope="session")
def data_root() -> Path:
    if not (DATA_ROOT / "bloodmnist.npz").is_file():
        pytest.skip(f"real data not found in {DATA_ROOT}")
    return DATA_ROOT


@pytest.fixture
def tiny_recipe(tmp_path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_RECIPE)
    return path


@pytest.fixture(autouse=True)
def _data_env(monkeypatch):
    monkeypatch.setenv("MEDPFGM_DATA", str(DATA_ROOT))
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
    layout (B, C + 1, H, W) with v_z in the last channel. Reads z back from the method's noise level."""

    def __init__(self, method, charges: torch.Tensor, charge_labels: torch.Tensor):
        super().__init__()
        self.method, self.charges, self.charge_labels = method, charges.double(), charge_labels

    def forward(self, x, timesteps, class_labels):
        lo, hi = math.log(self.method.cfg.z_min), math.log(self.method.cfg.z_max)
        z = torch.exp(timesteps.double() / 1000 * (hi - lo) + lo)
        v_x, v_z = poisson.empirical_field(
            x.flatten(1).double(), z, self.charges, self.method.cfg.gamma, labels=class_labels, charge_labels=self.charge_labels
        )
        b, c, h, w = x.shape
        return torch.cat([v_x.view(b, c, h, w), v_z.view(b, 1, 1, 1).expand(b, 1, h, w)], 1).float()
