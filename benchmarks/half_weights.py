"""What storing a committed model's EMA weights as float16 (`medpfgm export --dtype float16`) changes.

    python benchmarks/half_weights.py [RUN ...] [--n 64] [--out reports/reliability/half_weights.json]

For each run folder that holds both its training state (``checkpoints/last.pt``, float32) and a model
file (``ema.safetensors``), the same images are drawn from both weights — same seed, same sampler
(PFGM++: Heun 18; PFGM: Euler 100 in ln z; DDPM: DDIM 50) — and compared pixel by pixel, beside the
difference between two seeds of the float32 weights (what "a different image" looks like). The
committed runs' float32 training states are in the repository's history (commit 6838157):
``git restore --source=6838157 -- <run>/checkpoints/last.pt`` brings one back.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medpfgm.data import to_uint8  # noqa: E402
from medpfgm.evaluate.pipeline import machine  # noqa: E402
from medpfgm.io import load_checkpoint, load_model_file, write_json  # noqa: E402
from medpfgm.run import load_run  # noqa: E402
from medpfgm.sample import batch_generator, solve  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLERS = {"pfgmpp": ("heun", 18), "pfgm": ("euler", 100), "ddpm": ("ddim", 50)}


def draw(run, weights: dict, labels: torch.Tensor, seed: int) -> np.ndarray:
    """uint8 images (n, H, W, C) from ``run``'s network with ``weights``, seed ``seed``."""
    run.net.load_state_dict(weights)
    x, _ = solve(run.method, run.net, labels, *SAMPLERS[run.cfg.method], generator=batch_generator(seed, 0))
    return to_uint8(x).astype(np.int16)


def compare(run_dir: Path, n: int) -> dict:
    run = load_run(run_dir)
    full = load_checkpoint(run.paths.last_checkpoint)["ema"]
    half = load_model_file(run.paths.model)
    labels = torch.arange(n) % len(run.class_names)
    t0 = time.perf_counter()
    a, b, other_seed = draw(run, full, labels, 0), draw(run, half["weights"], labels, 0), draw(run, full, labels, 1)
    floats = [k for k, v in full.items() if v.is_floating_point()]
    rel = max(float((half["weights"][k] - full[k]).norm() / full[k].norm().clamp_min(1e-12)) for k in floats)
    diff = np.abs(a - b)
    return {
        "run": str(run_dir.relative_to(ROOT)) if run_dir.is_relative_to(ROOT) else str(run_dir),
        "method": run.cfg.method,
        "sampler": " ".join(map(str, SAMPLERS[run.cfg.method])),
        "model_dtype": half["dtype"],
        "max_relative_weight_change": rel,
        "pixels_differing": float((diff > 0).mean()),
        "pixels_within_one_level": float((diff <= 1).mean()),
        "max_level_difference": int(diff.max()),
        "mean_level_difference": float(diff.mean()),
        "mean_level_difference_other_seed": float(np.abs(a - other_seed).mean()),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", type=Path, help="run folders (default: every committed one with both files)")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--out", type=Path, default=ROOT / "reports" / "reliability" / "half_weights.json")
    args = p.parse_args()
    runs = args.runs or sorted(c.parent for c in ROOT.glob("reports/**/run/config.json"))
    runs = [r.resolve() for r in runs if (r / "checkpoints" / "last.pt").is_file() and (r / "ema.safetensors").is_file()]
    rows = []
    for run_dir in runs:
        rows.append(compare(run_dir, args.n))
        r = rows[-1]
        print(f"{r['run']}: weights {r['max_relative_weight_change']:.1e}; pixels differing {r['pixels_differing']:.1%}, within one level "
              f"{r['pixels_within_one_level']:.2%}, max {r['max_level_difference']}; other seed {r['mean_level_difference_other_seed']:.1f}", flush=True)
    write_json(args.out, {"n": args.n, "machine": machine(), "threads": torch.get_num_threads(), "runs": rows,
                          "command": "python benchmarks/half_weights.py"})
    print(args.out)


if __name__ == "__main__":
    main()
