"""Cost of one PFGM training step against a plain denoising step on the same UNet and batch.

    MEDPFGM_DATA=../shared/data python benchmarks/step.py [--steps 10]

PFGM's step = sampling B_L real images + perturbation + empirical field (no grad) + the network's
forward/backward on B images. The plain step = B images + Gaussian noise + the same network
(one output channel fewer) regressing the noise. The ratio is what the field target costs.
"""

from __future__ import annotations

import argparse
import time

import torch

from medpfgm.config import default_recipe, load_recipe
from medpfgm.data import RandomBatches, load_split
from medpfgm.nets import build_unet
from medpfgm.train import Trainer, resolve_config


def time_steps(step, n: int) -> float:
    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - t0) / n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    cfg = load_recipe(default_recipe("pfgm", "bloodmnist", 28))
    split = load_split(cfg.dataset, cfg.size, "train")
    cfg = resolve_config(cfg, split.images)
    trainer = Trainer(cfg, split, torch.device("cpu"))
    pfgm = time_steps(trainer.train_step, args.steps)

    net = build_unet(cfg.net, 3, 3, 8)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-4)
    batches, gen = RandomBatches(split, flip=True), torch.Generator().manual_seed(0)

    def plain_step() -> None:
        x, y = batches.sample(cfg.train.batch_size, gen)
        noise = torch.randn(x.shape, generator=gen)
        t = torch.rand(len(x), generator=gen) * 1000
        loss = (net(x + noise * (t / 1000)[:, None, None, None], timesteps=t, class_labels=y) - noise).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    plain = time_steps(plain_step, args.steps)
    print(f"B={cfg.train.batch_size}, B_L={cfg.pfgm.field_batch}, {torch.get_num_threads()} threads")
    print(f"PFGM step {1e3 * pfgm:.0f} ms, plain denoising step {1e3 * plain:.0f} ms")
    print(f"PFGM step / plain step: {pfgm / plain:.2f}x")


if __name__ == "__main__":
    main()
