"""Quality against D: PFGM++ trained like the committed D = 128 run at other D, scored at Heun 18.

    python benchmarks/d_sweep.py [--dims 1,8,2048] [--folder reports/bloodmnist_28] [--steps 4500]

Each new run copies the committed D = 128 run's resolved configuration (its recipe, budget, seed and
its plain EMA: `ema_rampup` 0) and changes only `aug_dim`, so every D differs from the others in D
alone. Runs go to ``<folder>/pfgmpp_d<D>/run`` (a killed training resumes from its last checkpoint),
then `medpfgm evaluate --solver heun --steps 18` scores each (a result that exists is skipped), and
`medpfgm report` rebuilds the page, whose "Quality against D" section and figure show all D together
beside PFGM (the large-batch field estimator at D = 1).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medpfgm.cli import main as medpfgm  # noqa: E402
from medpfgm.config import RunConfig, canonical_aug_dim  # noqa: E402
from medpfgm.train import train  # noqa: E402


def sweep_config(template: Path, aug_dim: str, steps: int) -> RunConfig:
    """The template run's configuration with D = ``aug_dim`` and the step target ``steps``."""
    data = json.loads(template.read_text())
    data["pfgmpp"]["aug_dim"] = canonical_aug_dim(aug_dim)
    data["train"]["steps"] = steps
    return RunConfig.from_dict(data, source=str(template))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dims", default="1,8,2048")
    p.add_argument("--folder", type=Path, default=Path("reports/bloodmnist_28"))
    p.add_argument("--steps", type=int, default=4500)
    p.add_argument("--no-evaluate", action="store_true", help="train only")
    args = p.parse_args()
    template = args.folder / "pfgmpp_d128" / "run" / "config.json"
    for dim in args.dims.split(","):
        cfg = sweep_config(template, dim, args.steps)
        run_dir = args.folder / cfg.label / "run"
        train(run_dir, cfg, torch.device("cpu"), resume="auto", steps=args.steps)
        if args.no_evaluate or (args.folder / "evaluations" / f"{cfg.label}_heun18.json").is_file():
            continue
        if medpfgm(["evaluate", "--run", str(run_dir), "--solver", "heun", "--steps", "18"]) != 0:
            sys.exit(f"evaluate failed for {run_dir}")
    medpfgm(["report", "--dataset", cfg.dataset, "--size", str(cfg.size)])


if __name__ == "__main__":
    main()
