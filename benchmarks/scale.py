"""What each size costs: training images/s and peak memory, fp32 vs bf16, sampling cost per NFE, and
PFGM's field target at 224 px, for each recipe's own backbone.

    python benchmarks/scale.py [--sizes 28,64,128,224] [--methods pfgm,pfgmpp,ddpm] [--precisions fp32,bf16] [--steps 3] [--device cpu|cuda]
                               [--out reports/scale/<device>.json]

Each (size, method, precision) runs in a fresh process (so peak memory is its own: CPU max RSS, or CUDA
max allocated) on random MedMNIST-format images of that size (cost does not depend on the pixels), with
the BloodMNIST recipe of that size and method: its UNet, batch and, for PFGM, field batch. Training:
the median of ``--steps`` steps after one warm-up. Sampling: one network evaluation on a batch of the
recipe's sampling size, in images per second per NFE. Field: PFGM's empirical field target at 224 px
with B_L = 4,096 charges in chunks (goal: under 4 GB). Results are merged into ``--out`` by key, so a
killed run keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def peak_memory_gb(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def fake_split(size: int, n: int = 256):
    import numpy as np

    from medpfgm.data import Split

    rng = np.random.default_rng(0)
    return Split(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), (np.arange(n) % 8).astype(np.int64), "bloodmnist", size, "train")


def measure_training(size: int, method: str, amp: bool, steps: int, device_name: str) -> dict:
    import dataclasses

    import torch

    from medpfgm.config import default_recipe, load_recipe
    from medpfgm.train import Trainer, resolve_config

    device = torch.device(device_name)
    split = fake_split(size)
    cfg = load_recipe(default_recipe(method, "bloodmnist", size))
    cfg = resolve_config(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, amp=amp)), split.images)
    trainer = Trainer(cfg, split, device)
    trainer.train_step()
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        trainer.train_step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    step = statistics.median(times)
    b = cfg.sample.batch_size
    x = torch.randn(b, 3, size, size, device=device)
    labels = torch.zeros(b, dtype=torch.int64, device=device)
    net = trainer.ema.module.eval()
    t_mid = float(trainer.method.times(10)[5]) if method != "ddpm" else None
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        call = (lambda: trainer.method.drift(net, x, t_mid, labels)) if method != "ddpm" else (lambda: net(x, timesteps=torch.full((b,), 500, device=device), class_labels=labels))
        call()
        t0 = time.perf_counter()
        call()
        if device.type == "cuda":
            torch.cuda.synchronize()
        nfe = time.perf_counter() - t0
    return {"batch": cfg.train.batch_size, "step_s": step, "train_images_per_s": cfg.train.batch_size / step, "sample_batch": b,
            "sample_images_per_s_per_nfe": b / nfe, "peak_memory_gb": peak_memory_gb(device), "parameters": sum(p.numel() for p in trainer.net.parameters())}  # fmt: skip


def measure_field(device_name: str, field_batch: int = 4096, chunk: int = 512) -> dict:
    import torch

    from medpfgm.physics.poisson import empirical_field, perturb, poisson_scales

    device = torch.device(device_name)
    n_dim, b = 3 * 224 * 224, 16
    charges = torch.rand(field_batch, n_dim, device=device).mul_(2).sub_(1)  # in place: the charges alone are 2.5 GB
    scales = poisson_scales(float(charges.norm(dim=1).mean()), n_dim)
    y, z = perturb(charges[:b], scales.m_max, generator=torch.Generator(device=device).manual_seed(0))
    labels = torch.arange(field_batch, device=device) % 8
    t0 = time.perf_counter()
    empirical_field(y, z, charges, 5.0, chunk, labels=labels[:b], charge_labels=labels)
    seconds = time.perf_counter() - t0
    charges_gb = charges.numel() * charges.element_size() / 2**30
    return {"size": 224, "field_batch": field_batch, "chunk": chunk, "points": b, "seconds": seconds, "charges_gb": charges_gb, "peak_memory_gb": peak_memory_gb(device)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="28,64,128,224")
    p.add_argument("--methods", default="pfgm,pfgmpp,ddpm")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--no-field", action="store_true", help="skip the 224-px field target row")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path)
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        kind, *rest = args.child.split(":")
        result = measure_field(args.device) if kind == "field" else measure_training(int(rest[0]), rest[1], rest[2] == "bf16", args.steps, args.device)
        print(json.dumps(result))
        return
    from medpfgm.evaluate.pipeline import machine
    from medpfgm.io import write_json

    out = args.out or ROOT / "reports" / "scale" / f"{args.device}.json"
    results = json.loads(out.read_text()) if out.is_file() else {"rows": {}}
    jobs = [f"train:{s}:{m}:{prec}" for s in args.sizes.split(",") for m in args.methods.split(",") for prec in args.precisions.split(",")]
    jobs += [] if args.no_field else ["field"]
    for job in jobs:
        if job in results["rows"]:
            continue
        done = subprocess.run([sys.executable, __file__, "--child", job, "--steps", str(args.steps), "--device", args.device], capture_output=True, text=True)
        row = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else {"error": (done.stderr.strip().splitlines() or ["?"])[-1][:300]}
        results["rows"][job] = row
        results.update({"machine": machine(), "threads": os.environ.get("OMP_NUM_THREADS"), "device": args.device})
        write_json(out, results)
        print(job, json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
