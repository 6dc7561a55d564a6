"""How well a trained PFGM network knows the field along its own sampling paths.

    MEDPFGM_DATA=../shared/data python benchmarks/field_fidelity.py reports/retinamnist_28/pfgm/run

Integrates the backward ODE with Euler steps (uniform in ln z) from the prior, and at each step
compares the network's field with the class-conditional empirical field of the whole training split
(the target it was trained to regress, computed exactly in float64): the cosine between the x-parts,
the network's v_z against the target's, and the speed |dx/dln z| of the network's drift (with the
small-z v_z the sampler uses) against the target's. Ends with the share of pixels outside [-1, 1].
A sampler or physics bug shows at large z, where the field is smooth and easy; a network that has
not learned the field near the data shows as agreement that decays toward z_min.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medpfgm.data import load_split, to_unit_range  # noqa: E402
from medpfgm.physics import poisson  # noqa: E402
from medpfgm.run import load_run  # noqa: E402


def fidelity_rows(method, net, x: torch.Tensor, labels: torch.Tensor, charges: torch.Tensor, charge_labels: torch.Tensor, times: torch.Tensor) -> tuple[list[dict], torch.Tensor]:
    """Euler-integrate the backward ODE of ``method`` with ``net`` from ``x`` (B, C, H, W) over ``times``
    (t = ln z), comparing with the empirical field of ``charges`` (K, N) at each step. Returns one row
    of medians over the batch per step and the end points."""
    rows = []
    with torch.no_grad():
        for t, t_next in zip(times[:-1].tolist(), times[1:].tolist()):
            z = torch.full((len(x),), math.exp(t), dtype=torch.float64)
            v_x, v_z = method.field(net, x.float(), z.float(), labels)
            e_x, e_z = poisson.empirical_field(x.flatten(1).double(), z, charges, method.cfg.gamma, labels=labels, charge_labels=charge_labels)
            drift = method.drift(net, x, t, labels).flatten(1)
            target = poisson.drift_in_lnz(e_x, e_z, math.exp(t))
            rows.append({
                "z": math.exp(t), "norm_x": float(x.flatten(1).norm(dim=1).median()),
                "cos_v_x": float(torch.nn.functional.cosine_similarity(v_x.double(), e_x, dim=1).median()),
                "v_z_net": float(v_z.median()), "v_z_target": float(e_z.median()),
                "speed_ratio": float((drift.norm(dim=1) / target.norm(dim=1)).median()),
            })  # fmt: skip
            x = x + drift.view_as(x) * (t_next - t)
    return rows, x


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run")
    p.add_argument("-n", type=int, default=32, help="paths, classes in turn")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--z-exp", type=float, help="the small-z switch (default: the run's)")
    args = p.parse_args()
    run = load_run(args.run)
    if run.cfg.method != "pfgm":
        sys.exit(f"{args.run} is a {run.cfg.method} run; this diagnostic is for PFGM (D = 1)")
    if args.z_exp is not None:
        run.method.cfg = dataclasses.replace(run.method.cfg, z_exp=args.z_exp)
    method, cfg = run.method, run.method.cfg
    train = load_split(run.cfg.dataset, run.cfg.size, "train")
    charges, charge_labels = to_unit_range(train.images).flatten(1).double(), torch.as_tensor(train.labels)
    labels = torch.arange(args.n) % len(run.class_names)
    x = method.prior(args.n, torch.Generator().manual_seed(args.seed))
    rows, x = fidelity_rows(method, run.net, x, labels, charges, charge_labels, method.times(args.steps))
    print(f"{run.cfg.label} {run.cfg.dataset} step {run.step}: N = {method.n_dim}, z_max = {cfg.z_max:.1f}, z_exp = {cfg.z_exp:g}, {len(charges)} charges; medians over {args.n} paths")
    print(f"{'z':>9} {'|x|':>8} {'cos v_x':>8} {'v_z net':>8} {'v_z target':>10} {'speed net/target':>17}")
    for r in rows:
        print(f"{r['z']:9.3f} {r['norm_x']:8.1f} {r['cos_v_x']:8.3f} {r['v_z_net']:8.2f} {r['v_z_target']:10.2f} {r['speed_ratio']:17.2f}")
    outside = ((x < -1) | (x > 1)).double().mean()
    print(f"end: {100 * outside:.1f} % of pixel values outside [-1, 1] (range {x.min():.1f} .. {x.max():.1f})")


if __name__ == "__main__":
    main()
