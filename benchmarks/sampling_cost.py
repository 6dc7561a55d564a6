"""Cost of one NFE per image for each run's network, timed back to back on one machine.

    python benchmarks/sampling_cost.py reports/bloodmnist_28/{pfgm,pfgmpp_d128,pfgmpp_dinf,ddpm}/run

The evaluations record the seconds per image of each setting, but they were sampled over several
sessions, on different machines and often beside other jobs. Sampling time is NFE x the cost of
one network evaluation (the solvers' own arithmetic is negligible beside the UNet), so timing that
cost for every model in one sitting gives comparable times: the report multiplies it by each
setting's NFE. Writes reports/<dataset>_<size>/sampling_cost.json; run it on a quiet machine
(the load before and after is recorded).
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

from medpfgm.evaluate.pipeline import machine, report_dir  # noqa: E402
from medpfgm.io import write_json  # noqa: E402
from medpfgm.run import load_run  # noqa: E402
from medpfgm.sample import solve  # noqa: E402


def ms_per_image_nfe(run, batch: int, nfe: int) -> float:
    """Median over 3 timings of a ``nfe``-step Euler (DDIM for DDPM) pass over ``batch`` images, per image and NFE."""
    solver = "ddim" if run.cfg.method == "ddpm" else "euler"
    labels = torch.arange(batch) % len(run.class_names)
    solve(run.method, run.net, labels, solver, 1, generator=torch.Generator().manual_seed(0))  # warm-up
    times = []
    for k in range(3):
        t0 = time.perf_counter()
        _, calls = solve(run.method, run.net, labels, solver, nfe, generator=torch.Generator().manual_seed(k))
        times.append((time.perf_counter() - t0) / (calls * batch))
    return 1e3 * float(np.median(times))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--nfe", type=int, default=4)
    p.add_argument("--reports", default="reports")
    args = p.parse_args()
    load_before = os.getloadavg()[0] / (os.cpu_count() or 1)
    by_folder: dict[Path, dict] = {}
    for run_dir in args.runs:
        run = load_run(run_dir)
        cost = ms_per_image_nfe(run, args.batch, args.nfe)
        print(f"{run.cfg.label:>14}: {cost:.2f} ms per image per NFE", flush=True)
        by_folder.setdefault(report_dir(run.cfg.dataset, run.cfg.size, args.reports), {})[run.cfg.label] = round(cost, 3)
    load_after = os.getloadavg()[0] / (os.cpu_count() or 1)
    for folder, costs in by_folder.items():
        record = {"machine": machine(), "threads": torch.get_num_threads(), "batch": args.batch, "nfe": args.nfe,
                  "load_per_core_before": round(load_before, 2), "load_per_core_after": round(load_after, 2), "ms_per_image_nfe": costs}  # fmt: skip
        print(f"wrote {write_json(folder / 'sampling_cost.json', record)}")


if __name__ == "__main__":
    main()
