"""Time and peak memory of PFGM's empirical-field target: medpfgm's log-space matrix products against
the naive (B, B_L, N+1) formulation of the official PFGM code. Not a test: run it by hand.

    python benchmarks/field.py            # ~1-2 minutes on a 2-core CPU, peaks at ~8 GB of RAM

Each measurement runs in a fresh process so that its peak resident memory (ru_maxrss, minus what
the process held before the call) belongs to that computation alone. The last line is
`field speedup vs naive at 28px: X.Xx` (B = 64, B_L = 1024).
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import platform
import resource
import time

import torch

from medpfgm.physics.poisson import empirical_field


def naive_field(y: torch.Tensor, z: torch.Tensor, charges: torch.Tensor, gamma: float = 5.0):
    """The official code's formulation: explicit (B, B_L, N+1) differences, min-distance ratio ^(N+1)."""
    n_dim = y.shape[1]
    y_aug = torch.cat([y, z[:, None]], 1)
    c_aug = torch.cat([charges, torch.zeros(len(charges), 1)], 1)
    diff = y_aug[:, None, :] - c_aug[None, :, :]  # (B, B_L, N+1)
    dist = diff.norm(dim=-1)
    ratio = dist.min(dim=1, keepdim=True).values / (dist + 1e-7)
    w = ratio ** (n_dim + 1)
    w = w / (w.sum(1, keepdim=True) + 1e-7)
    e = (-diff * w[:, :, None]).sum(1)
    v = math.sqrt(n_dim) * e / (e.norm(dim=1, keepdim=True) + gamma)
    return v[:, :-1], v[:, -1]


def _measure(kind: str, b: int, b_l: int, n_dim: int, repeats: int, queue) -> None:
    torch.set_num_threads(torch.get_num_threads())
    g = torch.Generator().manual_seed(0)
    charges = torch.rand(b_l, n_dim, generator=g) * 2 - 1
    y = charges[:b] + 0.5 * torch.randn(b, n_dim, generator=g)
    z = torch.rand(b, generator=g) + 0.01
    fn = naive_field if kind == "naive" else empirical_field
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with torch.no_grad():
        fn(y, z, charges)  # warm-up (and the peak)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn(y, z, charges)
    queue.put(((time.perf_counter() - t0) / repeats, peak * 1024))


def measure(kind: str, b: int, b_l: int, n_dim: int, repeats: int) -> tuple[float, float]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_measure, args=(kind, b, b_l, n_dim, repeats, queue))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        return math.nan, math.nan
    return queue.get()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-224", action="store_true")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    cases = [(28, 64, 1024, 5), (28, 64, 4096, 2)]
    if not args.skip_224:
        cases.append((224, 4, 256, 2))
    print(f"{'size':>5} {'B':>4} {'B_L':>5} {'method':>8} {'ms':>9} {'peak MiB':>9}")
    speedup = None
    for size, b, b_l, repeats in cases:
        n_dim = size * size * 3
        results = {kind: measure(kind, b, b_l, n_dim, repeats) for kind in ("naive", "medpfgm")}
        for kind, (sec, mem) in results.items():
            print(f"{size:>5} {b:>4} {b_l:>5} {kind:>8} {1e3 * sec:>9.1f} {mem / 2**20:>9.0f}")
        if (size, b_l) == (28, 1024):
            speedup = results["naive"][0] / results["medpfgm"][0]
    print(f"field speedup vs naive at 28px: {speedup:.1f}x")


if __name__ == "__main__":
    main()
