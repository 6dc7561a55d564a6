"""Training step and sampling cost under each OpenMP wait policy and thread count, in fresh processes.

    python benchmarks/threads.py --load quiet|loaded [--steps 8] [--out reports/reliability/threads.json]

For OMP_WAIT_POLICY unset (libgomp's default: threads spin before they sleep) and PASSIVE, at 1 and 2
threads, a fresh interpreter times a training step of the PFGM++ recipe (BloodMNIST 28 px, batch 64;
median of ``--steps`` after one warm-up) and one network evaluation of a sampling batch of 256. Run it once
on a quiet machine (``--load quiet``) and once with another CPU-heavy job on the cores (``--load
loaded``; say which in ``--note``): results of both are kept in one file, by load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(steps: int) -> dict:
    """Timings in this process (its environment already set)."""
    import torch

    sys.path.insert(0, str(ROOT))
    from medpfgm.config import default_recipe, load_recipe
    from medpfgm.data import load_split
    from medpfgm.train import Trainer, resolve_config

    split = load_split("bloodmnist", 28, "train")
    cfg = resolve_config(load_recipe(default_recipe("pfgmpp", "bloodmnist", 28)), split.images)
    trainer = Trainer(cfg, split, torch.device("cpu"))
    trainer.train_step()
    step = []
    for _ in range(steps):
        t0 = time.perf_counter()
        trainer.train_step()
        step.append(time.perf_counter() - t0)
    x = torch.randn(256, 3, 28, 28)
    labels = torch.zeros(256, dtype=torch.int64)
    net = trainer.ema.module.eval()
    nfe = []
    with torch.no_grad():
        trainer.method.drift(net, x, 1.0, labels)
        for _ in range(max(2, steps // 2)):
            t0 = time.perf_counter()
            trainer.method.drift(net, x, 1.0, labels)
            nfe.append(time.perf_counter() - t0)
    return {"train_step_s": statistics.median(step), "sample_nfe_batch256_s": statistics.median(nfe), "threads": torch.get_num_threads()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--load", choices=("quiet", "loaded"), required=True)
    p.add_argument("--note", default="", help="what else ran on the cores")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=ROOT / "reports" / "reliability" / "threads.json")
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.steps)))
        return
    sys.path.insert(0, str(ROOT))
    from medpfgm.evaluate.pipeline import machine
    from medpfgm.io import write_json

    rows = []
    for policy in (None, "PASSIVE"):
        for threads in (1, 2):
            env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "MEDPFGM_OMP_DEFAULTS")}
            env.update({"OMP_NUM_THREADS": str(threads), "MEDPFGM_OMP_DEFAULTS": "0"})  # medpfgm must not set the policy here
            if policy:
                env["OMP_WAIT_POLICY"] = policy
            done = subprocess.run([sys.executable, __file__, "--load", args.load, "--child", "--steps", str(args.steps)], env=env, capture_output=True, text=True, check=True)
            row = {"omp_wait_policy": policy or "default", "omp_num_threads": threads, **json.loads(done.stdout.strip().splitlines()[-1])}
            rows.append(row)
            print(f"{args.load}: OMP_WAIT_POLICY={row['omp_wait_policy']:>7}, {threads} thread(s): train step {row['train_step_s']:.3f} s, "
                  f"one NFE of 256 images {row['sample_nfe_batch256_s']:.3f} s", flush=True)  # fmt: skip
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results[args.load] = {"rows": rows, "note": args.note, "machine": machine(), "command": f"python benchmarks/threads.py --load {args.load} --steps {args.steps}"}
    write_json(args.out, results)


if __name__ == "__main__":
    main()
