"""The Python API, for people who augment from their own training scripts (the CLI is built on the same modules).

    import medpfgm
    run = medpfgm.load_run("reports/bloodmnist_28/pfgmpp_d128/run")       # EMA weights, eval mode
    images, labels = medpfgm.synthesize(run, n=64, class_id=3)                # uint8 (64, 28, 28, 3), (64,)
    data = medpfgm.ImageDataset("fill.npz", transform=my_monai_transform)   # real + synthetic, with the mask
    loader = torch.utils.data.DataLoader(data, batch_size=128, shuffle=True)
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from medpfgm.catalog import check_class
from medpfgm.data import read_image_file
from medpfgm.errors import MedpfgmError
from medpfgm.run import LoadedRun, load_run, select_device
from medpfgm.sample import check_solver, generate


def synthesize(
    run: LoadedRun,
    n: int,
    class_id: int | None = None,
    solver: str | None = None,
    steps: int | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images of class ``class_id`` (all classes in turn when None) from a loaded run.

    Returns images uint8 (n, H, W, C) and labels int64 (n,). The sampler defaults to the run's recipe;
    a given seed gives the same images as ``medpfgm synthesize --seed``.
    """
    if n <= 0:
        raise MedpfgmError(f"n must be a positive integer, got {n}")
    sc = run.cfg.sample
    labels = np.full(n, check_class(run.cfg.dataset, class_id)) if class_id is not None else np.arange(n) % len(run.class_names)
    device = next(run.net.parameters()).device
    images, _, _ = generate(
        run, labels, check_solver(run, solver or sc.solver), steps or sc.steps, sc.rtol, sc.atol, batch_size or sc.batch_size, seed, device, progress
    )  # fmt: skip
    return images, labels.astype(np.int64)


class ImageDataset(torch.utils.data.Dataset):
    """Real and synthetic images of one file as a map-style dataset for ``torch.utils.data.DataLoader``.

    Item i is a dict: ``image`` float32 (C, H, W) in [0, 1] (MONAI's channel-first layout), ``label``
    int64, ``synthetic`` bool. ``transform`` (e.g. a MONAI ``Compose`` of dictionary transforms such as
    ``RandFlipd(keys="image")``) is applied to that dict.
    """

    def __init__(self, path: str | Path, split: str = "train", transform: Callable[[dict], dict] | None = None):
        self.images, self.labels, self.synthetic = read_image_file(path, split)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        item = {
            "image": torch.from_numpy(np.ascontiguousarray(self.images[i].transpose(2, 0, 1))).float() / 255.0,
            "label": torch.tensor(self.labels[i]),
            "synthetic": torch.tensor(bool(self.synthetic[i])),
        }
        return self.transform(item) if self.transform is not None else item


__all__ = ["ImageDataset", "LoadedRun", "load_run", "read_image_file", "select_device", "synthesize"]
