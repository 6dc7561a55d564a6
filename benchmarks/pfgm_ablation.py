"""Why `--method pfgm` trails the official PFGM: one factor at a time against the recipe, at equal steps.

    python benchmarks/pfgm_ablation.py [--arms baseline,zw1,...] [--steps 1500[,3000,...]] [--page-only]

Each arm is the BloodMNIST 28 px PFGM recipe as it was before issue 15 (`benchmarks/pfgm_ablation_base.toml`;
`recipes/pfgm/` now holds the arm `cond_halfsum`'s settings) with one change, trained
on the whole training split to each budget of ``--steps`` in turn and scored there (same seed for all; a
killed run resumes from its last checkpoint, a finished one is extended by a larger budget, and a score
that exists is kept). Sample-only arms reuse another arm's network with a different sampling constant;
arm ``pfgmpp_d128`` is PFGM++ D = 128 from its own recipe, the reference; ``committed_*`` arms score a
committed run (its own step, no training), to place the dataset page's runs on this protocol. Every arm is scored the way the
official code was scored in issue 15: 400 images (labels in the training split's class proportions)
drawn by Euler with 100 steps uniform in ln z (PFGM++: Heun 18), compared class-agnostically with one fixed block of 400 test images, in the evaluation
classifier's feature space (domain FD) and Inception's (FID); the real-vs-real floor is a second,
disjoint block of 400 test images against the same block. Also kept: the fraction of raw pixel values
outside [-1, 1] before clipping, the failed draws (samples with over a quarter of them outside: noise, not
cells), the median sample norm (the data's is about 28.9) and the class
fidelity (how often the evaluation classifier names the class asked for). Results go to
``reports/bloodmnist_28/pfgm_ablation/<arm>/step<k>.json`` (a picture of the samples beside each), then the
page ``reports/bloodmnist_28/pfgm_ablation/README.md`` is rebuilt.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medpfgm.classifier import predict_proba  # noqa: E402
from medpfgm.config import RunConfig, default_recipe  # noqa: E402
from medpfgm.data import class_names, load_split, to_uint8  # noqa: E402
from medpfgm.evaluate.evaluate import cached_features  # noqa: E402
from medpfgm.evaluate.pipeline import build_spaces, checked_classifier, machine  # noqa: E402
from medpfgm.evaluate.protocol import stratified_counts  # noqa: E402
from medpfgm.evaluate.report import reading_section  # noqa: E402
from medpfgm.figures import _save, class_grid  # noqa: E402
from medpfgm.io import atomic_write, write_json  # noqa: E402
from medpfgm.run import load_run, training_seconds  # noqa: E402
from medpfgm.sample import batch_generator, solve  # noqa: E402
from medpfgm.train import train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "reports" / "bloodmnist_28" / "pfgm_ablation"
N, BLOCK_SEED, BATCH = 400, 0, 200
SAMPLERS = {"pfgm": ("euler", 100), "pfgmpp": ("heun", 18)}  # official PFGM's Euler 100 in ln z; PFGM++'s Heun 18


@dataclass(frozen=True)
class Arm:
    """One arm: what changes against the method's recipe; a sample-only arm reuses another arm's network."""

    change: str
    overrides: dict = field(default_factory=dict)
    method: str = "pfgm"
    reuse: str | None = None  # sample-only: the arm whose network is sampled
    committed: str | None = None  # score-only: a committed run folder (relative to the repository), at its own step
    sample_overrides: dict = field(default_factory=dict)  # PFGM constants changed at sampling only


OFFICIAL = {"conditional": False, "pfgm": {"time_input": "z", "z_loss_weight": 1.0, "field_batch": 1024}, "train": {"grad_clip": 0.01}}
# One-factor additions to the recipe all failed while all five together worked: these arms take the official set and
# put one factor back to the recipe's value, to find which factors the official run cannot do without.
LEAVE_ONE_OUT = {
    "off_cond": ("class-conditional (the recipe's field and network)", ("conditional",)),
    "off_zwN": ("v_z loss weight N (the recipe's)", ("pfgm", "z_loss_weight")),
    "off_clip": ("gradient clip 1 (the recipe's)", ("train", "grad_clip")),
    "off_lnz": ("ln z time input (the recipe's)", ("pfgm", "time_input")),
    "off_fb2048": ("B_L 2,048 (the recipe's)", ("pfgm", "field_batch")),
}


def without(overrides: dict, *path: str) -> dict:
    """A deep copy of ``overrides`` less the key at ``path`` (the recipe's value then applies)."""
    out = copy.deepcopy(overrides)
    node = out
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return out


ARMS = {
    "baseline": Arm("the recipe as committed (w = N, B_L 2,048 class-conditional, ln z time, raw input, EMA ramp-up 0.05)"),
    "zw1": Arm("v_z loss weight 1 (official)", {"pfgm": {"z_loss_weight": 1.0}}),
    "zw48": Arm("v_z loss weight 48 (about sqrt N, between)", {"pfgm": {"z_loss_weight": 48.0}}),
    "fb1024": Arm("field batch B_L 1,024", {"pfgm": {"field_batch": 1024}}),
    "fb8192": Arm("field batch B_L 8,192 (~1,000 charges per class)", {"pfgm": {"field_batch": 8192}}),
    "uncond": Arm("unconditional network and field (official)", {"conditional": False}),
    "rawz": Arm("time input raw z (official) instead of ln z mapped to 0..1000", {"pfgm": {"time_input": "z"}}),
    "edmin": Arm("input scaled by 1/sqrt(z^2 + 0.25) (PFGM++ D = 1's c_in)", {"pfgm": {"input_scale": "edm"}}),
    "plainema": Arm("plain EMA 0.999 from the first step (the committed runs' EMA)", {"train": {"ema_rampup": 0.0}}),
    "clipall": Arm("gradient clipped at norm 0.01, i.e. at every step, as the official 0.5-sum loss is at clip 1", {"train": {"grad_clip": 0.01}}),
    "official": Arm("all official settings at once: unconditional, raw z, w = 1, B_L 1,024, clipped every step", OFFICIAL),
    **{name: Arm(f"official settings but {change}", without(OFFICIAL, *path)) for name, (change, path) in LEAVE_ONE_OUT.items()},
    "official_seed1": Arm("all official settings at once, seed 1 (the others: seed 0): how far one run's score moves with the seed",
                          {**OFFICIAL, "seed": 1}),
    "cond_halfsum": Arm("off_cond expressed without touching [train]: class-conditional, raw z, w = 1, B_L 1,024, the official "
                        "0.5-sum loss under the recipe's clip 1 (clipped every step, as clip 0.01 on the mean loss): the recipe candidate",
                        {"pfgm": {"time_input": "z", "z_loss_weight": 1.0, "field_batch": 1024, "loss_reduction": "half_sum"}}),
    "off_cond_fb8192": Arm("official settings but class-conditional with B_L 8,192 (~1,000 charges per class, as the official "
                           "unconditional field has 1,024): is the conditional field's cost its few charges?",
                           {**without(OFFICIAL, "conditional"), "pfgm": {**OFFICIAL["pfgm"], "field_batch": 8192}}),
    "warmup5k": Arm("learning-rate warm-up 5,000 steps (official default)", {"train": {"warmup_steps": 5000}}),
    "zexp1": Arm("small-z switch z_exp 1 instead of 5 (sampling only, baseline network)", reuse="baseline", sample_overrides={"z_exp": 1.0}),
    "zexp0": Arm("no small-z switch (z_exp 0; sampling only, baseline network)", reuse="baseline", sample_overrides={"z_exp": 0.0}),
    "pfgmpp_d128": Arm("PFGM++ D = 128, its recipe (recipes/pfgmpp/bloodmnist_28.toml), Heun 18: the reference", method="pfgmpp"),
    "committed_pfgm": Arm("the committed PFGM run (reports/bloodmnist_28/pfgm: the recipe with plain EMA 0.999), scored on this protocol",
                          committed="reports/bloodmnist_28/pfgm/run"),
    "committed_pfgmpp_d128": Arm("the committed PFGM++ D = 128 run (reports/bloodmnist_28/pfgmpp_d128: its recipe with plain EMA "
                                 "0.999), Heun 18, scored on this protocol", method="pfgmpp", committed="reports/bloodmnist_28/pfgmpp_d128/run"),
}


def merged(base: dict, overrides: dict) -> dict:
    """``base`` with ``overrides`` applied table by table (a deep copy)."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        out[key] = merged(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def base_recipe(method: str) -> dict:
    """The recipe an arm of ``method`` changes: PFGM's as it was when the ablations ran (benchmarks/pfgm_ablation_base.toml;
    issue 15 changed recipes/pfgm since), PFGM++'s from recipes/."""
    path = Path(__file__).with_name("pfgm_ablation_base.toml") if method == "pfgm" else default_recipe(method, "bloodmnist", 28)
    return tomllib.loads(path.read_text())


def arm_config(name: str, steps: int) -> RunConfig:
    arm = ARMS[name]
    recipe = merged(base_recipe(arm.method), arm.overrides)
    recipe["train"]["steps"] = steps
    return RunConfig.from_dict(recipe, source=f"arm {name}")


def train_arm(name: str, steps: int, device: torch.device) -> Path:
    """Train (or resume, or extend) arm ``name`` to ``steps``; returns its run folder."""
    run_dir = OUT / name / "run"
    train(run_dir, arm_config(name, steps), device, resume="auto", steps=steps)
    return run_dir


def real_blocks(test) -> tuple[np.ndarray, np.ndarray]:
    """The fixed reference block of N test images and a disjoint floor block of N more."""
    order = np.random.default_rng(BLOCK_SEED).permutation(len(test.labels))
    return test.images[order[:N]], test.images[order[N : 2 * N]]


def sample_raw(run, labels: np.ndarray, seed: int = 0) -> tuple[torch.Tensor, int, float]:
    """Raw (unclipped) samples (n, C, H, W) float32 for ``labels`` with the method's sampler (SAMPLERS),
    the NFE per batch and the seconds."""
    parts, nfe, t0 = [], 0, time.perf_counter()
    for k, start in enumerate(range(0, len(labels), BATCH)):
        batch = torch.as_tensor(labels[start : start + BATCH])
        x, nfe = solve(run.method, run.net, batch, *SAMPLERS[run.cfg.method], generator=batch_generator(seed, k))
        parts.append(x)
        print(f"  sampled {start + len(batch)}/{len(labels)} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return torch.cat(parts), nfe, time.perf_counter() - t0


FAILED_OUT_OF_RANGE = 0.25  # a drawn image with more of its raw pixel values outside [-1, 1] is noise, not a cell


def failed_draws(raw: torch.Tensor) -> float:
    """The fraction of samples (n, C, H, W), raw and unclipped, with over FAILED_OUT_OF_RANGE of their values
    outside [-1, 1]: draws that ended as saturated noise (a real image has none; a drawn cell a few %)."""
    return float(((raw.abs() > 1).flatten(1).float().mean(1) > FAILED_OUT_OF_RANGE).float().mean())


def draw_samples(images: np.ndarray, labels: np.ndarray, path: Path, title: str) -> Path:
    """An arm's samples as a per-class grid, in the evaluation grids' format (8 a class, 80 dpi)."""
    return class_grid(images, labels, class_names("bloodmnist"), path, per_class=8, title=title, dpi=80)


def score_arm(name: str, run_dir: Path, spaces: list, classifier, train_split, test_split, device) -> Path:
    """Sample and score one arm at its run's current step; writes step<k>.json and a picture."""
    run, arm = load_run(run_dir, device), ARMS[name]
    if arm.sample_overrides:
        run.method.cfg = dataclasses.replace(run.method.cfg, **arm.sample_overrides)
    out = OUT / name / f"step{run.step}.json"
    if out.is_file():
        return out
    labels = np.repeat(np.arange(train_split.num_classes), stratified_counts(train_split.class_counts(), N))
    raw, nfe, seconds = sample_raw(run, labels)
    images = to_uint8(raw)
    reference, floor_block = real_blocks(test_split)
    record = {
        "arm": name,
        "change": arm.change,
        "method": run.cfg.method,
        "overrides": arm.overrides,
        "sample_overrides": arm.sample_overrides,
        "run": str(run_dir.relative_to(ROOT)),
        "step": run.step,
        "train_seconds": training_seconds(run_dir, run.step),
        "sampler": {"solver": SAMPLERS[run.cfg.method][0], "steps": SAMPLERS[run.cfg.method][1], "nfe": nfe, "n": N, "seconds": round(seconds, 1)},
        "out_of_range": float((raw.abs() > 1).float().mean()),
        "failed_draws": failed_draws(raw),
        "median_norm": float(raw.flatten(1).norm(dim=1).median()),
        "class_fidelity": float((predict_proba(classifier, images).argmax(1) == labels).mean()) if run.cfg.conditional else None,
        "machine": machine(),
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }
    for space in spaces:
        ref_f = cached_features(space, reference)
        record[space.name] = space.distance(ref_f, space.extract(images))
        record[f"{space.name}_floor"] = space.distance(ref_f, cached_features(space, floor_block))
    write_json(out, record)
    draw_samples(images, labels, out.with_suffix(".png"), f"{name}, step {run.step}, {' '.join(map(str, SAMPLERS[run.cfg.method]))}")
    print(f"{name} step {run.step}: domain FD {record['domain']:.1f}, FID {record.get('fid', math.nan):.1f}, out of range {record['out_of_range']:.1%}", flush=True)
    return out


def load_scores() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(OUT.glob("*/step*.json"))]


def power_law(steps, values, floor: float) -> tuple[float, float]:
    """Least-squares fit, in log-log, of ``values - floor = a * steps ** -b``; returns (a, b).

    steps, values: 1-D sequences of equal length (at least 2), every value above ``floor``."""
    slope, intercept = np.polyfit(np.log(np.asarray(steps, float)), np.log(np.asarray(values, float) - floor), 1)
    return float(np.exp(intercept)), float(-slope)


def steps_to_reach(a: float, b: float, excess: float) -> float:
    """The steps at which ``a * steps ** -b`` falls to ``excess`` (> 0); inf when the fit does not fall (b <= 0)."""
    return (a / excess) ** (1 / b) if b > 0 else math.inf


CURVE_ARMS = ("cond_halfsum", "pfgmpp_d128")  # the budget curve's arms
CURVE_FROM, FIT_FROM = 1500, 4500  # drawn from CURVE_FROM on; the law fitted from FIT_FROM on, past the early fast fall
METRICS = {"fid": "FID", "domain": "domain FD"}


def budget_section(scores: list[dict]) -> list[str]:
    """The budget curve: each CURVE_ARMS arm's scores against steps (figure), a power law fitted to its points from
    FIT_FROM on (three at least), and the steps that law puts at 2x and 1.1x the real floor (an extrapolation, said as one)."""
    curves = {arm: sorted((r for r in scores if r["arm"] == arm and r["step"] >= CURVE_FROM), key=lambda r: r["step"]) for arm in CURVE_ARMS}
    curves = {arm: rows for arm, rows in curves.items() if len(rows) >= 2}
    if not curves:
        return []
    import matplotlib.pyplot as plt  # after medpfgm.figures has chosen the Agg backend

    fig, axes = plt.subplots(1, len(METRICS), figsize=(10, 3.8))
    lines = ["## Budget curve", "", f"Each arm's scores from step {CURVE_FROM} on; where an arm has three or more from step {FIT_FROM} on (past "
             "the early fast fall), the power law `score - floor = a * steps^-b` fitted in log-log to those, and the steps at which "
             "it reaches 2x and 1.1x the real floor. An extrapolation from a few points of one seed: an order of magnitude only, "
             "and for PFGM's domain FD, which jumps with its few failed draws, not even that.", "",
             "| arm | metric | steps scored | scores | b (fitted) | steps to 2x floor | steps to 1.1x floor |", "| --- | --- | --- | --- | --- | --- | --- |"]
    committed = [r for r in scores if r["arm"] in ARMS and ARMS[r["arm"]].committed]
    ticks = sorted({r["step"] for rows in curves.values() for r in rows})
    for ax, (metric, label) in zip(axes, METRICS.items()):
        floor = next(r[f"{metric}_floor"] for r in scores if f"{metric}_floor" in r)
        for arm, rows in curves.items():
            steps, values = [r["step"] for r in rows], [r[metric] for r in rows]
            ax.plot(steps, values, "o-", label=arm)
            fit = [(s, v) for s, v in zip(steps, values) if s >= FIT_FROM and v > floor]  # the law needs a positive excess
            cells = ["–", "–", "–"]  # b, steps to 2x floor, steps to 1.1x floor
            if len(fit) >= 3:
                a, b = power_law(*zip(*fit), floor)
                grid = np.geomspace(fit[0][0], steps[-1] * 2, 50)
                ax.plot(grid, floor + a * grid**-b, ":", color=ax.lines[-1].get_color())
                cells = [f"{b:.2f}"] + [f"{steps_to_reach(a, b, k * floor):,.0f}" for k in (1.0, 0.1)]
            lines.append(f"| {arm} | {label} | {', '.join(map(str, steps))} | {', '.join(f'{v:.1f}' for v in values)} | {' | '.join(cells)} |")
        for r in committed:
            ax.plot(r["step"], r[metric], "s", label=r["arm"])
        ax.axhline(floor, color="gray", ls="--", label="real floor")
        ax.set(yscale="log", xlabel="training steps", ylabel=label, title=f"{label} against budget (dotted: fitted law)")
        ax.set_xticks(ticks, [f"{t:,}" for t in ticks], fontsize=7)
    axes[0].legend(fontsize=7)
    figure = _save(fig, OUT / "budget_curve.png", dpi=100, palette=True)
    return lines + ["", f"![budget curve]({figure.name})", ""]


def write_page(scores: list[dict]) -> Path:
    """The ablation page: one row per (arm, step), the floor, and how each arm was made."""
    if not scores:
        return OUT / "README.md"
    floor = scores[0]
    rows = sorted(scores, key=lambda r: (r["step"], list(ARMS).index(r["arm"]) if r["arm"] in ARMS else 99))
    lines = [
        "# PFGM (D = 1) ablations — BloodMNIST 28 px",
        "",
        "Made by `python benchmarks/pfgm_ablation.py` (see its docstring for the protocol). Each arm is the recipe",
        "`recipes/pfgm/bloodmnist_28.toml` as it was before this issue (`benchmarks/pfgm_ablation_base.toml`) with one change — or, for the `off_*` arms, the official settings with one factor",
        "put back to the recipe's value (leave-one-out: which factors the official run cannot do without) — trained on the",
        "whole training split with seed 0 and scored with",
        f"{N} samples (PFGM: Euler 100, uniform in ln z; PFGM++: Heun 18) against one fixed block of {N} test images, class-agnostic.",
        f"Real-vs-real floor (a disjoint block of {N} test images): domain FD {floor['domain_floor']:.2f}"
        + (f", FID {floor['fid_floor']:.1f}." if "fid_floor" in floor else "."),
        "The official PFGM (issue 15, same scoring): domain FD 26,328 at 450 steps and **73.4 at 1,500 steps**.",
        "",
        *reading_section(OUT),
        "## Arms",
        "",
        "| arm | change | step | domain FD | FID | out of [-1, 1] | failed draws | median norm | class fidelity | train s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        fid = f"{r['fid']:.1f}" if "fid" in r else "–"
        fidelity = f"{r['class_fidelity']:.2f}" if r.get("class_fidelity") is not None else "–"
        train_s = f"{r['train_seconds']:.0f}" if r.get("train_seconds") else "–"
        failed = f"{r['failed_draws']:.1%}" if "failed_draws" in r else "–"
        lines.append(
            f"| {r['arm']} | {r['change']} | {r['step']} | {r['domain']:.1f} | {fid} | {r['out_of_range']:.1%} | {failed} | "
            f"{r['median_norm']:.1f} | {fidelity} | {train_s} |"
        )
    lines += [""] + budget_section(scores)
    machines = sorted({r["machine"] for r in scores})
    lines += [f"Machines: {'; '.join(machines)}. Threads and load per arm are in its JSON file.", ""]
    lines += [f"![{r['arm']} step {r['step']}]({r['arm']}/step{r['step']}.png)" for r in rows]
    page = OUT / "README.md"
    atomic_write(page, lambda tmp: tmp.write_text("\n".join(lines) + "\n"))
    return page


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arms", default=",".join(ARMS), help="comma-separated arm names")
    p.add_argument("--steps", default="1500", help="comma-separated step budgets: each arm is trained to each in turn and scored there")
    p.add_argument("--page-only", action="store_true")
    args = p.parse_args()
    arms = args.arms.split(",")
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        sys.exit(f"unknown arm(s) {', '.join(unknown)}; choose from: {', '.join(ARMS)}")
    if not args.page_only:
        device = torch.device("cpu")
        train_split, test_split = load_split("bloodmnist", 28, "train"), load_split("bloodmnist", 28, "test")
        classifier, _ = checked_classifier(ROOT / "reports" / "bloodmnist_28" / "classifier", "bloodmnist", 28, device)
        spaces, unavailable = build_spaces(["fid"], classifier, None, device)
        for name in arms:
            if ARMS[name].committed:  # a committed run has one step, its own
                score_arm(name, ROOT / ARMS[name].committed, spaces, classifier, train_split, test_split, device)
                continue
            for steps in (int(s) for s in args.steps.split(",")):
                if (OUT / name / f"step{steps}.json").is_file():
                    continue  # scored already (a fresh clone has the scores, not the training state)
                run_dir = OUT / ARMS[name].reuse / "run" if ARMS[name].reuse else train_arm(name, steps, device)
                score_arm(name, run_dir, spaces, classifier, train_split, test_split, device)
                write_page(load_scores())  # after each score: a long queue shows its results as they come
    print(write_page(load_scores()))


if __name__ == "__main__":
    main()
