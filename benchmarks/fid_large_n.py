"""FID at large n for each model's best setting: `medpfgm evaluate --full-reference` where it is missing.

    python benchmarks/fid_large_n.py reports/bloodmnist_28 reports/retinamnist_28 [-n 2000] [--only LABEL,...]

A model's best setting is the one with the lowest FID in its report folder's `evaluations/` (n = 400
against class-matched references; every setting must have been scored with FID). Each is sampled at
n images (default 2,000, in the training split's class proportions) and scored against the whole
training split, with n real test images as the floor (all of them where the split has fewer; see
`full_reference_score`). Cheapest first (by NFE). Samples are kept batch by batch and real features
in chunks, so a killed run resumes where it stopped; a setting whose result file exists is skipped.
Then the page is rebuilt.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medpfgm.cli import main as medpfgm  # noqa: E402
from medpfgm.evaluate.report import best_per_model, load_evaluations, solver_args  # noqa: E402


def best_settings(folder: Path) -> list[dict]:
    """Each model's evaluation subject with the lowest FID, cheapest (fewest NFE) first."""
    records = [r for r in load_evaluations(folder) if r["subject"].get("run")]
    missing = [r["subject"] for r in records if "fid" not in r["score"]]
    if missing:
        raise SystemExit(f"{folder}: {missing[0]['label']} {missing[0]['setting']} has no FID yet; run benchmarks/rescore.py {folder} first")
    best = best_per_model(records, "fid")
    return sorted((r["subject"] for r in best.values()), key=lambda s: s["nfe"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", type=Path)
    p.add_argument("-n", type=int, default=2000)
    p.add_argument("--only", help="comma-separated model labels")
    p.add_argument("--reports", default="reports")
    p.add_argument("--bf16", action="store_true", help="sample with the network in bfloat16 autocast (~1.8x faster on CPUs with AVX512-BF16; recorded in the result)")
    args = p.parse_args()
    for folder in args.folders:
        for s in best_settings(folder):
            if args.only and s["label"] not in args.only.split(","):
                continue
            out = folder / "evaluations_full" / f"{s['label']}_{s['setting'].replace(' ', '')}_n{args.n}.json"
            if out.is_file():
                continue
            command = ["evaluate", "--run", s["run"], *solver_args(s).split(), "--full-reference", "-n", str(args.n), "--metrics", "fid", "--reports", args.reports, *(["--bf16"] if args.bf16 else [])]
            print("$ medpfgm " + " ".join(command), flush=True)
            if medpfgm(command) != 0:
                sys.exit(f"evaluate failed for {s['label']} {s['setting']}")
        setup = json.loads(next((folder / "evaluations").glob("*.json")).read_text())["setup"]
        medpfgm(["report", "--dataset", setup["dataset"], "--size", str(setup["size"]), "--reports", args.reports])


if __name__ == "__main__":
    main()
