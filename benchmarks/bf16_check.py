"""Does bfloat16 sampling (`--bf16`) draw the same images as float32? Same seed, same sampler, both precisions.

    python benchmarks/bf16_check.py reports/bloodmnist_28/ddpm/run --solver ddpm --steps 1000 -n 32

Draws n images (classes in turn) with one seed in float32 and in bf16, and a second float32 draw with
another seed as the scale of "different images". Prints, in uint8 grey levels: the mean absolute
pixel difference of each pair of draws and the fraction of pixels that differ by more than 8 levels,
and the seconds per image of each precision (one thread unless OMP_NUM_THREADS says otherwise; the
load is printed). bf16 is a faithful stand-in where the same-seed difference is small beside the
different-seed one. Writes nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medpfgm.config import Variant  # noqa: E402
from medpfgm.data import to_uint8  # noqa: E402
from medpfgm.run import load_run  # noqa: E402
from medpfgm.sample import solve  # noqa: E402


def draw(run, labels: torch.Tensor, solver: str, steps: int, seed: int, bf16: bool) -> tuple[np.ndarray, float]:
    """uint8 images (n, H, W, C) and the seconds they took."""
    t0 = time.perf_counter()
    x, _ = solve(run.method, run.net, labels, solver, steps, generator=torch.Generator().manual_seed(seed), variant=Variant(bf16=bf16))
    return to_uint8(x).astype(np.int16), time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run")
    p.add_argument("--solver", default="heun")
    p.add_argument("--steps", type=int, default=18)
    p.add_argument("-n", type=int, default=32)
    args = p.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    run = load_run(args.run)
    labels = torch.arange(args.n) % len(run.class_names)
    load = os.getloadavg()[0]
    with torch.no_grad():
        fp32, t32 = draw(run, labels, args.solver, args.steps, 0, False)
        bf16, t16 = draw(run, labels, args.solver, args.steps, 0, True)
        other, _ = draw(run, labels, args.solver, args.steps, 1, False)
    for name, b in (("bf16, same seed", bf16), ("float32, another seed", other)):
        d = np.abs(fp32 - b)
        print(f"float32 vs {name}: mean |difference| {d.mean():.2f} grey levels, pixels off by > 8: {(d > 8).mean():.1%}")
    print(f"seconds per image: float32 {t32 / args.n:.2f}, bf16 {t16 / args.n:.2f} ({t32 / t16:.2f}x); "
          f"{args.run} {args.solver} {args.steps}, n {args.n}, {torch.get_num_threads()} thread(s), load {load:.2f} before")


if __name__ == "__main__":
    main()
