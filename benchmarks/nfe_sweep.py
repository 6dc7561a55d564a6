"""Quality against NFE for trained runs: `medpfgm evaluate` at the standard solver settings, then `report`.

    python benchmarks/nfe_sweep.py reports/bloodmnist_28/pfgm/run reports/bloodmnist_28/ddpm/run

Settings per method (issue 5): PFGM: Euler and Heun at 10/20/50/100 steps, RK45 at rtol
1e-2 and 1e-3; PFGM++: Heun at 5/10/18/35 steps, Euler 50; DDPM: DDIM at 10/20/50/100/250 and
1000-step ancestral; VAPO: Heun 5/10/18/35, Euler 50, RK45 at rtol 1e-2 and 1e-3. Issue 14 adds the settings at PFGM++ Heun 18's NFE (35) for the FID table:
PFGM Heun 18 and DDIM 35. A setting whose result file exists is skipped, so a killed sweep resumes.
The ladder is scored first if the report folder has none.

    python benchmarks/nfe_sweep.py RUN... --grid projection --variants plain,proj
    python benchmarks/nfe_sweep.py RUN --grid guidance --variants w0,w0.5,w1,w2,w4

``--grid projection`` (issue 18): PFGM++ Euler and DDPM DDIM at 5/10/20/35 steps; ``--grid guidance``:
the method's default setting. ``--variants``: each setting is scored once per variant — ``plain``,
``proj`` (the projection step) and ``w<W>`` (classifier-free guidance weight W); a variant is scored
as a model of its own (``pfgmpp_d128_proj``, ``pfgmpp_d128_cfg_w2``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medpfgm.cli import main as medpfgm  # noqa: E402
from medpfgm.config import Variant  # noqa: E402
from medpfgm.evaluate.pipeline import report_dir  # noqa: E402
from medpfgm.run import read_config  # noqa: E402

SETTINGS = {
    "pfgm": [("euler", 10), ("euler", 20), ("euler", 50), ("euler", 100), ("heun", 10), ("heun", 18), ("heun", 20), ("heun", 50), ("heun", 100), ("rk45", 1e-2), ("rk45", 1e-3)],
    "pfgmpp": [("heun", 5), ("heun", 10), ("heun", 18), ("heun", 35), ("euler", 50)],
    "ddpm": [("ddim", 10), ("ddim", 20), ("ddim", 35), ("ddim", 50), ("ddim", 100), ("ddim", 250), ("ddpm", 1000)],
    "vapo": [("heun", 10), ("heun", 18), ("rk45", 1e-2), ("rk45", 1e-3), ("euler", 50), ("heun", 5), ("heun", 35)],  # a VAPO NFE is a forward and a backward
}

GRIDS = {
    "standard": SETTINGS,
    "projection": {"pfgmpp": [("euler", 5), ("euler", 10), ("euler", 20), ("euler", 35)], "ddpm": [("ddim", 5), ("ddim", 10), ("ddim", 20), ("ddim", 35)]},
    "guidance": {"pfgmpp": [("heun", 18)], "ddpm": [("ddim", 50)], "pfgm": [("euler", 100)], "vapo": [("rk45", 1e-3)]},
}


def variant_of(name: str) -> tuple[Variant, list[str]]:
    """A --variants entry as a Variant and its evaluate arguments."""
    if name == "plain":
        return Variant(), []
    if name == "proj":
        return Variant(project=True), ["--project"]
    if name.startswith("w"):
        w = float(name[1:])
        return Variant(guidance=w), ["--guidance", f"{w:g}"]
    sys.exit(f"unknown variant '{name}'; use plain, proj or w<weight>")


def setting_args(solver: str, value: float) -> tuple[list[str], str]:
    """The evaluate arguments of a setting and the stem of its result file (after the model label)."""
    if solver == "rk45":
        return ["--solver", "rk45", "--rtol", f"{value:g}"], f"rk45rtol{value:g}"
    return ["--solver", solver, "--steps", str(int(value))], f"{solver}{int(value)}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+")
    p.add_argument("-n", type=int, default=None, help="images per setting (default: evaluate's)")
    p.add_argument("--reports", default="reports")
    p.add_argument("--only", help="comma-separated solver names to run (e.g. ddim)")
    p.add_argument("--grid", default="standard", choices=list(GRIDS), help="which settings (see above)")
    p.add_argument("--variants", default="plain", help="comma-separated: plain, proj, w<W>")
    args = p.parse_args()
    variants = [variant_of(v) for v in args.variants.split(",")]
    folders = set()
    for run in args.runs:
        cfg = read_config(run)
        folder = report_dir(cfg.dataset, cfg.size, args.reports)
        folders.add((cfg.dataset, cfg.size, folder))
        if not (folder / "ladder.json").is_file():
            medpfgm(["evaluate", "--ladder", "--dataset", cfg.dataset, "--size", str(cfg.size), "--reports", args.reports, "--quiet"])
        for (solver, value), (variant, variant_args) in ((s, v) for s in GRIDS[args.grid].get(cfg.method, []) for v in variants):
            if args.only and solver not in args.only.split(","):
                continue
            extra, stem = setting_args(solver, value)
            if (folder / "evaluations" / f"{cfg.model_name(variant)}_{stem}.json").is_file():
                continue
            n = ["-n", str(args.n)] if args.n else []
            print(f"$ medpfgm evaluate --run {run} {' '.join(extra + variant_args + n)}", flush=True)
            if medpfgm(["evaluate", "--run", run, *extra, *variant_args, *n, "--reports", args.reports, "--quiet"]) != 0:
                sys.exit(f"evaluate failed for {run} {stem}{variant.suffix}")
    for dataset, size, _ in sorted(folders):
        medpfgm(["report", "--dataset", dataset, "--size", str(size), "--reports", args.reports])


if __name__ == "__main__":
    main()
