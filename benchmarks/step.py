"""Cost of one training step of each method on the same UNet, batch and data (BloodMNIST 28 px).

    MEDPFGM_DATA=../shared/data python benchmarks/step.py [--steps 10]

PFGM's step = B_L real images + perturbation + empirical field (no grad) + the network on B images;
PFGM++ and DDPM = B images + noise + the same network (one output channel fewer). The PFGM / DDPM
ratio is what the field target costs; the field alone is timed too.
"""

from __future__ import annotations

import argparse
import time

import torch

from medpfgm.config import METHODS, default_recipe, load_recipe
from medpfgm.data import load_split
from medpfgm.physics.poisson import empirical_field, perturb
from medpfgm.train import Trainer, resolve_config


def seconds_per_call(fn, n: int) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    split = load_split("bloodmnist", 28, "train")
    times = {}
    for method in METHODS:
        cfg = resolve_config(load_recipe(default_recipe(method, "bloodmnist", 28)), split.images)
        trainer = Trainer(cfg, split, torch.device("cpu"))
        times[method] = seconds_per_call(trainer.train_step, args.steps)
        if method == "pfgm":
            pfgm = trainer
    images, labels = pfgm.batches.sample(pfgm.method.data_batch_size(pfgm.cfg.train.batch_size), pfgm.data_gen)
    charges, b, c = images.flatten(1), pfgm.cfg.train.batch_size, pfgm.cfg.pfgm
    y, z = perturb(charges[:b], c.m_max, c.sigma, c.tau, c.restrict_m)
    field = seconds_per_call(lambda: empirical_field(y, z, charges, c.gamma, labels=labels[:b], charge_labels=labels), args.steps)
    print(f"BloodMNIST 28 px, B={pfgm.cfg.train.batch_size}, PFGM B_L={c.field_batch}, {torch.get_num_threads()} threads")
    for method, sec in times.items():
        print(f"{method:>7}: {1e3 * sec:6.0f} ms/step")
    print(f"  field target alone: {1e3 * field:.0f} ms")
    print(f"PFGM step / DDPM step: {times['pfgm'] / times['ddpm']:.2f}x")


if __name__ == "__main__":
    main()
