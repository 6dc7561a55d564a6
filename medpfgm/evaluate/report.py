"""``medpfgm report``: reports/<dataset>_<size>/README.md and its figures from the evaluation files.

Inputs: ``evaluations/*.json`` (``medpfgm evaluate``), ``ladder.json`` (``medpfgm evaluate --ladder``).
Outputs: README.md, quality_vs_nfe.png, per_class.png. The same inputs give the same files.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
import numpy as np  # noqa: E402

from medpfgm.data import class_names, read_image_file  # noqa: E402
from medpfgm.errors import MedpfgmError, shorten  # noqa: E402
from medpfgm.evaluate.evaluate import HIGHER_IS_BETTER, summarize  # noqa: E402
from medpfgm.figures import _save, distinct_colors, evaluation_grid, legend_beside  # noqa: E402
from medpfgm.io import atomic_write  # noqa: E402

COLUMNS = {  # metric -> table header
    "domain_fd": "domain FD",
    "domain_fd_class": "domain FD per class",
    "frd": "FRD",
    "frd_class": "FRD per class",
    "fid": "FID",
    "fid_class": "FID per class",
    "kid": "KID",
    "precision": "precision",
    "recall": "recall",
    "density": "density",
    "coverage": "coverage",
    "class_fidelity": "class fidelity",
}
MAIN_METRIC = "domain_fd"


def load_evaluations(folder: Path, kind: str = "evaluations") -> list[dict]:
    """The result files of ``folder/kind`` (``evaluations`` or the large-n ``evaluations_full``), sorted by model and NFE."""
    records = []
    for path in sorted((folder / kind).glob("*.json")):
        try:
            record = json.loads(path.read_text())
            check_record(record, kind)
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
            reason = shorten(f"{type(exc).__name__}: {exc}", 100)
            raise MedpfgmError(f"evaluation file '{path}' is corrupt or not a medpfgm result ({reason}); re-run medpfgm evaluate") from None
        records.append(record)
    return sorted(records, key=lambda r: (r["subject"]["label"], r["subject"].get("nfe") or 0, r["subject"].get("setting", "")))


def check_record(record: dict, kind: str = "evaluations") -> None:
    """Touch every field the page reads, so that a damaged result file fails here, by name, not halfway
    through the page (raises KeyError, TypeError, ValueError or AttributeError)."""
    subject = record["subject"]
    str(subject["label"]), str(subject.get("setting", "")), float(subject.get("nfe") or 0), float(subject.get("seconds_per_image") or 0)
    setup = record["setup"]
    int(setup["seed"])
    if kind == "evaluations":
        sum(int(c) for c in setup["counts"]), int(setup["repeats"]), str(setup["machine"])
        for part in (record["score"], record["floor"]):
            for value in summarize(part).values():
                float(value["mean"]), float(value["std"])
            for space in part.values():
                for value in (space.get("fd_per_class", {}) if isinstance(space, dict) else {}).values():
                    float(value["mean"]), float(value["std"])
            {str(k): float(v) for k, v in part.get("class_fidelity", {}).get("per_class", {}).items()}
    else:
        int(record["n"]), int(record["n_floor"])
        {str(k): float(v) for k, v in record["score"].items()}, {str(k): float(v) for k, v in record["floor"].items()}


def _fmt(value: dict | None, flagged: bool = False) -> str:
    if value is None:
        return "–"
    mean, std = value["mean"], value["std"]
    text = f"{mean:.3g} ± {std:.2g}" if std else f"{mean:.3g}"
    return text + (" ⚠" if flagged else "")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def best_per_model(records: list[dict], space: str = "domain") -> dict[str, dict]:
    """Each model's evaluation with the lowest Fréchet distance in ``space`` (records without it are skipped)."""
    best: dict[str, dict] = {}
    for r in records:
        if space not in r["score"]:
            continue
        label, value = r["subject"]["label"], r["score"][space]["fd"]["mean"]
        if label not in best or value < best[label]["score"][space]["fd"]["mean"]:
            best[label] = r
    return best


def plot_quality_vs_nfe(records: list[dict], path: Path, floor: dict) -> Path | None:
    """Domain FD (and FRD where measured) against NFE, one line per model and solver."""
    runs = [r for r in records if r["subject"].get("nfe")]
    if not runs:
        return None
    metrics = [m for m in ("domain_fd", "frd", "fid") if m in floor]
    def series(r: dict) -> str:
        return f"{r['subject']['label']} {r['subject']['solver']}"

    names = sorted({series(r) for r in runs})
    color = dict(zip(names, distinct_colors(len(names))))  # one colour per model and solver in every panel
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics) + 2.5, 3.8), squeeze=False, layout="constrained")  # constrained: room for the legend
    for ax, metric in zip(axes[0], metrics):
        groups: dict[str, list] = {}
        for r in runs:
            if metric in summarize(r["score"]):
                groups.setdefault(series(r), []).append(r)
        for name, group in sorted(groups.items()):
            group = sorted(group, key=lambda r: r["subject"]["nfe"])
            x = [r["subject"]["nfe"] for r in group]
            y = [summarize(r["score"])[metric]["mean"] for r in group]
            e = [summarize(r["score"])[metric]["std"] for r in group]
            ax.errorbar(x, y, yerr=e, marker="o", ms=4, capsize=2, color=color[name])
        ax.axhline(floor[metric]["mean"], color="k", ls="--", lw=1)
        yscale = "linear" if metric == "frd" else "log"  # FRD is a logarithm already
        ax.set(xscale="log", yscale=yscale, xlabel="NFE (network evaluations per image)", ylabel=COLUMNS[metric], title=f"{COLUMNS[metric]} vs NFE (lower is better)")
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=color[n], marker="o", ms=4, label=n) for n in names] + [Line2D([], [], color="k", ls="--", lw=1, label="real test vs train (floor)")]
    legend_beside(axes[0][-1], handles)  # every series, whichever panels it has points in
    return _save(fig, path, palette=True)


MATCHED_NFE = 35  # the NFE of PFGM++'s Heun 18, at which the FID table compares every model


def fid_table(records: list[dict], full: list[dict], floor: dict) -> list[str]:
    """FID of each model at its best setting and at the measured setting nearest NFE 35 (n as in the
    overall table), and at large n against the whole training split, each beside its real floor."""
    with_fid = [r for r in records if "fid" in r["score"] and r["subject"].get("nfe")]
    if not with_fid:
        return []
    fid = lambda r: r["score"]["fid"]["fd"]  # noqa: E731
    n = sum(with_fid[0]["setup"]["counts"])
    rows = [["**real test vs train (floor)**", "–", _fmt(floor["fid"]["fd"]), "–", "–", "–"]]
    for label, best in sorted(best_per_model(with_fid, "fid").items()):
        own = [r for r in with_fid if r["subject"]["label"] == label]
        matched = min(own, key=lambda r: (abs(r["subject"]["nfe"] - MATCHED_NFE), fid(r)["mean"]))
        large = [large_n_text(r) for r in full if r["subject"]["label"] == label and "fid" in r["score"]]
        rows.append([label, f"{best['subject']['setting']} (NFE {best['subject']['nfe']:.0f})", _fmt(fid(best)),
                     f"{matched['subject']['setting']} (NFE {matched['subject']['nfe']:.0f})", _fmt(fid(matched)), "; ".join(large) or "–"])  # fmt: skip
    reference = full[0]["n_reference"] if full else None
    lines = ["## FID", "", f"FID of each model at its best sampler setting and at the measured setting nearest {MATCHED_NFE} NFE "
             f"({n} images against class-matched real training images, mean ± std over {with_fid[0]['setup']['repeats']} reference draws), "
             f"and at large n against the whole training split" + (f" ({reference} images; `--full-reference`)" if reference else " (`--full-reference`: not run yet)") + ". "
             f"Each beside the real floor at the same n: FID falls as n grows, so only numbers at equal n compare.", ""]
    lines += _table(["model", f"best setting (n {n})", "FID", f"nearest {MATCHED_NFE} NFE", "FID", "at large n: setting, FID (floor)"], rows) + [""]
    return lines


D_SWEEP_SETTING = "heun 18"  # the setting at which every D is compared (PFGM++'s published sampler)


def aug_dim_of(label: str) -> float | None:
    """D of a plain PFGM++ model label ('pfgmpp_d128' -> 128.0, 'pfgmpp_dinf' -> inf); None for other
    models and for sampler variants ('pfgmpp_d128_proj')."""
    match = re.fullmatch(r"pfgmpp_d(\d+|inf)", label)
    return None if match is None else float(match.group(1))


def d_sweep_section(records: list[dict], floor: dict, path: Path) -> list[str]:
    """'Quality against D': PFGM++ at every trained D (Heun 18) beside PFGM's best setting, table and figure.

    Shown once three or more D have been scored at Heun 18.
    """
    sweep = sorted((r for r in records if aug_dim_of(r["subject"]["label"]) is not None and r["subject"].get("setting") == D_SWEEP_SETTING),
                   key=lambda r: aug_dim_of(r["subject"]["label"]))  # fmt: skip
    if len(sweep) < 3:
        return []
    pfgm = best_per_model([r for r in records if r["subject"]["label"] == "pfgm"], "fid" if "fid" in floor else "domain").get("pfgm")
    metrics = [m for m in ("fid", "domain_fd", "class_fidelity") if m in summarize(floor)]
    finite = [aug_dim_of(r["subject"]["label"]) for r in sweep if aug_dim_of(r["subject"]["label"]) != float("inf")]
    inf_at = max(finite) * 16 if finite else 1.0  # where D = inf is drawn on the log axis
    distances = [m for m in metrics if m != "class_fidelity"]
    fig, axes = plt.subplots(1, len(distances), figsize=(5.2 * len(distances), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], distances):
        xs = [min(aug_dim_of(r["subject"]["label"]), inf_at) for r in sweep]
        ys = [summarize(r["score"])[metric] for r in sweep]
        ax.errorbar(xs, [y["mean"] for y in ys], yerr=[y["std"] for y in ys], marker="o", capsize=2, label=f"PFGM++ ({D_SWEEP_SETTING})")
        if pfgm is not None and metric in summarize(pfgm["score"]):
            ax.plot([1], [summarize(pfgm["score"])[metric]["mean"]], "rs", label=f"PFGM, field estimator ({pfgm['subject']['setting']})")
        ax.axhline(summarize(floor)[metric]["mean"], color="k", ls="--", lw=1, label="real floor")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ticks = sorted(set(xs) | ({1.0} if pfgm is not None else set()))
        ax.set_xticks(ticks, [("∞" if x == inf_at else f"{x:g}") for x in ticks])
        ax.set(xlabel="augmented dimension D", ylabel=COLUMNS[metric], title=f"{COLUMNS[metric]} against D (lower is better)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    figure = _save(fig, path, palette=True)
    rows = [[f"PFGM++ D = {r['subject']['label'].removeprefix('pfgmpp_d').replace('inf', '∞')}", r["subject"]["setting"], f"{r['subject']['step']}"]
            + [_fmt(summarize(r["score"]).get(m)) for m in metrics] for r in sweep]  # fmt: skip
    if pfgm is not None:
        rows.append([f"PFGM (D = 1, large-batch field), best by {COLUMNS[metrics[0]]}", pfgm["subject"]["setting"], f"{pfgm['subject']['step']}"]
                    + [_fmt(summarize(pfgm["score"]).get(m)) for m in metrics])  # fmt: skip
    rows.append(["**real test vs train (floor)**", "–", "–"] + [_fmt(summarize(floor).get(m)) for m in metrics])
    lines = ["## Quality against D", "", f"PFGM++ trained at each D with the same recipe, budget and seed, sampled with {D_SWEEP_SETTING} "
             "(`benchmarks/d_sweep.py`). D = 1 in PFGM++ shares PFGM's perturbation kernel and prior but learns the per-sample "
             "denoising target with EDM preconditioning; PFGM learns the empirical field of a large batch. Comparing the two "
             "separates the estimator from the geometry.", ""]
    lines += _table(["model", "sampler", "steps", *[COLUMNS[m] for m in metrics]], rows)
    return lines + ["", f"![quality against D]({figure.name})", ""]


GUIDANCE_METRICS = ("fid", "domain_fd", "class_fidelity", "precision", "recall", "coverage")


def guidance_section(records: list[dict], floor: dict, path: Path) -> list[str]:
    """'Classifier-free guidance': for each run scored at two or more guidance weights w at one setting (only a
    run trained with label dropout can be), class fidelity against recall/coverage and the distances as w grows."""
    sweeps: dict[tuple, list[dict]] = {}
    for r in records:
        s = r["subject"]
        if "guidance" in s and not s.get("project"):
            sweeps.setdefault((s["run"], s["setting"]), []).append(r)
    sweeps = {k: sorted(v, key=lambda r: r["subject"]["guidance"]) for k, v in sweeps.items() if len({r["subject"]["guidance"] for r in v}) > 1}
    if not sweeps:
        return []
    real = summarize(floor)
    metrics = [m for m in GUIDANCE_METRICS if m in real]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), squeeze=False)
    lines = ["## Classifier-free guidance", "", "A run trained with label dropout (a null class) sampled at guidance weight w: "
             "f = (1 + w) f(x, c) − w f(x, ∅), two network evaluations a step (counted in NFE). w = 0 is the unguided sampler. "
             "Guidance trades diversity (recall, coverage) for class fidelity.", ""]
    for (run, setting), sweep in sorted(sweeps.items()):
        ws = [r["subject"]["guidance"] for r in sweep]
        panels = ((axes[0][0], (("class_fidelity", "o-"), ("recall", "s--"), ("coverage", "^:"))), (axes[0][1], (("fid", "o-"), ("domain_fd", "s--"))))
        for ax, lines_of in panels:
            for m, style in (ms for ms in lines_of if ms[0] in metrics):
                ax.plot(ws, [summarize(r["score"])[m]["mean"] for r in sweep], style, label=f"{COLUMNS[m]} ({sweep[0]['subject']['label']})")
        rows = [[f"{r['subject']['guidance']:g}", f"{r['subject']['nfe']:.0f}"] + [_fmt(summarize(r["score"]).get(m)) for m in metrics] for r in sweep]
        rows.append(["**real test vs train (floor)**", "–"] + [_fmt(real.get(m)) for m in metrics])
        lines += [f"`{run}` (step {sweep[0]['subject']['step']}), {setting}:", ""]
        lines += _table(["w", "NFE", *[COLUMNS[m] for m in metrics]], rows) + [""]
    axes[0][0].set(xlabel="guidance weight w", ylabel="higher is better", title="class fidelity against diversity")
    axes[0][1].set(xlabel="guidance weight w", yscale="log", ylabel="lower is better", title="distances to the real images")
    for ax in axes[0]:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    figure = _save(fig, path, palette=True)
    return lines + [f"![guidance sweep]({figure.name})", ""]


def large_n_text(record: dict) -> str:
    """'heun 18: 12.3 at n 2000 (floor 4.5 at n 2000)', with the model at the floor's n where that is smaller."""
    score, floor, n_floor = record["score"], record["floor"]["fid"], record["n_floor"]
    bf16 = " in bf16" if record["subject"].get("precision") == "bfloat16" else ""
    text = f"{record['subject']['setting']}{bf16}: {score['fid']:.3g} at n {record['n']} (floor {floor:.3g} at n {n_floor}"
    return text + (f"; model {score['fid_at_floor_n']:.3g} at n {n_floor})" if "fid_at_floor_n" in score else ")")


def weights_note(records: list[dict]) -> list[str]:
    """Which FID weights computed the page's FID numbers (from the result files)."""
    used = {(w["format"], w["sha256"]) for r in records for space, w in r["setup"].get("weights", {}).items() if space == "fid"}
    if not used:
        return []
    return [f"- FID weights: " + "; ".join(f"{fmt}, SHA-256 {sha[:12]}…" for fmt, sha in sorted(used))
            + " (the TF inception-2015-12-05 graph in pytorch-fid's network; images resized to 299 px bilinearly)."]


def plot_per_class(best: dict[str, dict], floor: dict, names: list[str], path: Path) -> Path | None:
    """Per-class domain FD of each model's best setting beside the real floor."""
    if not best:
        return None
    classes = sorted(floor["domain"]["fd_per_class"], key=int)
    labels = sorted(best)
    width = 0.8 / (len(labels) + 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(classes)) + 2, 3.8), layout="constrained")  # constrained: room for the legend
    x = np.arange(len(classes))
    styles = [{"color": c} for c in distinct_colors(len(labels))] + [{"facecolor": "white", "edgecolor": "black", "hatch": "////"}]  # the floor: hatched, not one more colour
    for i, label in enumerate(labels + ["floor"]):
        per_class = (floor if label == "floor" else best[label]["score"])["domain"]["fd_per_class"]
        ax.bar(x + i * width, [per_class[c]["mean"] for c in classes], width, yerr=[per_class[c]["std"] for c in classes], label=label, **styles[i])
    ax.set_xticks(x + 0.4 - width / 2, [shorten(names[int(c)], 16) for c in classes], rotation=30, ha="right", fontsize=8)
    ax.set(ylabel="domain FD", title="per-class domain Fréchet distance (best setting of each model)", yscale="log")
    legend_beside(ax)  # inside, it hid the last classes' bars
    return _save(fig, path, palette=True)


def machine_letters(records: list[dict]) -> dict[str, str]:
    """Each machine the evaluations ran on, in order of first appearance, with a letter for the tables."""
    machines = dict.fromkeys(r["setup"]["machine"] for r in records)
    return {m: chr(ord("a") + i) for i, m in enumerate(machines)}


def reading_section(folder: Path) -> list[str]:
    """The page's hand-written reading — which model to use for what, in plain words — from READING.md beside
    the page, so that it survives every rebuild; nothing when there is none."""
    path = folder / "READING.md"
    return ["## Reading (hand-written: READING.md)", "", path.read_text().strip(), ""] if path.is_file() else []


def overall_notes(records: list[dict], machines: dict[str, str], cost: dict | None) -> list[str]:
    """The bullet lines under the overall table: how to read its times, and what a metric left out."""
    lines = []
    if cost:
        per_model = ", ".join(f"{label} {ms:.2f} ms" for label, ms in sorted(cost["ms_per_image_nfe"].items()))
        lines += [f"- *s / image, one sitting*: NFE × the cost of one network evaluation per image, timed for every model back to back "
                  f"(`benchmarks/sampling_cost.py`, batch {cost['batch']}) on {cost['machine']}, {cost['threads']} threads, load per core "
                  f"{cost['load_per_core_before']} before and {cost['load_per_core_after']} after: {per_model}. Use this column to compare times."]
    if len(machines) > 1:
        lines += [f"- The settings were sampled on {len(machines)} machines, marked (a), (b), … beside their seconds per image: compare times within one machine."]
    busy = [r["subject"] for r in records if r["subject"].get("cpu_load_per_core", 0) > 1.2]
    if busy:
        lines += [f"- Seconds per image of {len(busy)} of {len(records)} settings were measured while other jobs shared the cores "
                  f"(load per core up to {max(s['cpu_load_per_core'] for s in busy):.1f}): compare them as rough costs; NFE is exact."]
    featureless = [f"{r['subject']['label']} {r['subject'].get('setting', '')}: {space.upper()} {v['featureless']} of {r['score']['n']}"
                   for r in records for space, v in r["score"].items() if isinstance(v, dict) and v.get("featureless")]
    if featureless:
        lines += [f"- Images a feature space cannot describe (radiomics on a constant image) are left out of its distances, so "
                  f"those distances flatter the model: {'; '.join(featureless)}."]
    unavailable = {k: v for r in records for k, v in r.get("unavailable", {}).items()}
    lines += [f"- **{name.upper()} unavailable**: {reason}" for name, reason in sorted(unavailable.items())]
    return lines


def solver_args(subject: dict) -> str:
    """The sampler flags of an evaluated setting, as `medpfgm evaluate` takes them."""
    args = f"--solver {subject['solver']} " + (f"--rtol {subject['rtol']:g}" if subject["solver"] == "rk45" else f"--steps {subject['steps']}")
    args += (" --project" if subject.get("project") else "") + (f" --guidance {subject['guidance']:g}" if subject.get("guidance") else "")
    return args + (" --bf16" if subject.get("precision") == "bfloat16" else "")


def redraw_grids(folder: Path, records, names: list[str]) -> list[str]:
    """Draw again each record's grid that is missing, from its samples file; returns the grids that
    could not be drawn (the samples file is gone or damaged too)."""
    missing = []
    for r in records:
        grid, samples = folder / r["subject"]["grid"], r["subject"].get("samples")
        if grid.is_file():
            continue
        try:
            images, labels, _ = read_image_file(samples)
        except MedpfgmError:  # gone or damaged: the page says so
            missing.append(str(grid))
            continue
        evaluation_grid(images, labels, names, grid, r["subject"])
    return missing


def memorization_section(records: list[dict], names: list[str]) -> list[str]:
    """Per audited evaluation: how many synthetic images sit closer to a training image than 99 % of real
    test images do (pixels and domain features), per class, and its closest pairs."""
    audited = [r for r in records if "memorization" in r]
    if not audited:
        return []
    lines = ["## Memorization audit", "",
             "Each synthetic image's distance to its nearest training image (whole training split), against the same distance "
             "for real test images, which no model saw. *Flagged*: closer to a training image than the 1st percentile of the "
             "test-to-train distances — closer than 99 % of unseen real images come (so about 1 % is what an honest generator "
             "shows). `medpfgm evaluate --metrics …,memorization`.", ""]  # fmt: skip
    classes = sorted({c for r in audited for c in r["memorization"]["pixel"]["flagged_per_class"]}, key=int)
    header = ["model", "sampler", "flagged (pixels)", "flagged (domain)", "median distance synthetic / test (pixels)", *[f"{c} {shorten(names[int(c)], 12)}" for c in classes]]
    rows = []
    for r in audited:
        m = r["memorization"]
        pix, dom = m["pixel"], m.get("domain")
        rows.append([r["subject"]["label"], r["subject"].get("setting", ""), f"{pix['flagged']:.1%}", f"{dom['flagged']:.1%}" if dom else "–",
                     f"{pix['median_fake_to_train']:.2f} / {pix['median_test_to_train']:.2f}",
                     *[f"{pix['flagged_per_class'].get(c, float('nan')):.0%}" for c in classes]])  # fmt: skip
    lines += _table(header, rows) + ["", "Per class: the share of that class's synthetic images flagged in pixel space.", ""]
    lines += [f"![{r['subject']['label']} {r['subject'].get('setting', '')} closest pairs]({r['memorization']['figure']})" for r in audited if r["memorization"].get("figure")]
    return lines + [""]


def build_report(folder: str | Path) -> Path:
    """Write README.md and figures into ``folder`` (reports/<dataset>_<size>)."""
    folder = Path(folder)
    records = load_evaluations(folder)
    ladder = json.loads((folder / "ladder.json").read_text()) if (folder / "ladder.json").is_file() else None
    if not records and ladder is None:
        raise MedpfgmError(f"'{folder}' has no evaluations/*.json and no ladder.json; run `medpfgm evaluate` first")
    setup = (records[0] if records else ladder)["setup"]
    dataset, size = setup["dataset"], setup["size"]
    names = class_names(dataset)
    flagged = {m for m, ok in (ladder or {}).get("ranks", {}).items() if not ok}
    lines = [f"# {dataset} {size} px: synthetic image quality", ""]
    machines = machine_letters(records)
    measured_on = setup["machine"] if len(machines) < 2 else "; ".join(f"({k}) {m}" for m, k in machines.items())
    lines += [f"Measured on: {measured_on}. Every number is the mean ± std over {setup['repeats']} draws of the real reference "
              f"({sum(setup['counts'])} images in the training split's class proportions: {setup['counts']}). Lower is better except "
              f"precision, recall, density, coverage and class fidelity. ⚠ marks a metric that fails the validity ladder below.", ""]
    lines += reading_section(folder)
    if records:
        floor = {}
        for r in records:  # spaces added later (FID) may be in some files only
            for space, value in r["floor"].items():
                floor.setdefault(space, value)
        metrics = [m for m in COLUMNS if m in summarize(floor)]
        cost = json.loads((folder / "sampling_cost.json").read_text()) if (folder / "sampling_cost.json").is_file() else None
        rows = [["**real test vs train (floor)**", "–", "–", "–"] + (["–"] if cost else []) + [_fmt(summarize(floor).get(m), m in flagged) for m in metrics]]
        for r in records:
            s = r["subject"]
            nfe = f"{s['nfe']:.0f}" if s.get("nfe") else "–"
            spi = f"{s['seconds_per_image']:.2f}" if s.get("seconds_per_image") else "–"
            spi += f" ({machines[r['setup']['machine']]})" if len(machines) > 1 and s.get("seconds_per_image") else ""
            est = [f"{s['nfe'] * cost['ms_per_image_nfe'][s['label']] / 1e3:.2f}" if s.get("nfe") and s["label"] in cost["ms_per_image_nfe"] else "–"] if cost else []
            rows.append([s["label"], s.get("setting", ""), nfe, spi, *est] + [_fmt(summarize(r["score"]).get(m), m in flagged) for m in metrics])
        time_columns = ["s / image", *(["s / image, one sitting"] if cost else [])]
        lines += ["## Overall", ""] + _table(["model", "sampler", "NFE", *time_columns, *[COLUMNS[m] for m in metrics]], rows) + [""]
        notes = overall_notes(records, machines, cost) + weights_note(records)
        lines += notes + ([""] if notes else [])
        full = load_evaluations(folder, "evaluations_full")
        lines += fid_table(records, full, floor)
        lines += d_sweep_section(records, floor, folder / "quality_vs_d.png")
        lines += guidance_section(records, floor, folder / "guidance.png")
        curve = plot_quality_vs_nfe(records, folder / "quality_vs_nfe.png", summarize(floor))
        if curve:
            lines += ["## Quality against NFE", "", f"![quality vs NFE]({curve.name})", ""]
        best = best_per_model(records)
        per_class = plot_per_class(best, floor, names, folder / "per_class.png")
        classes = sorted(floor["domain"]["fd_per_class"], key=int)
        lines += ["## Per class (best setting of each model)", ""]
        for space, title in (("domain", "Domain Fréchet distance"), ("fid", "FID")):
            if space not in floor:
                continue
            rows = [[f"{c} {shorten(names[int(c)], 28)}", _fmt(floor[space]["fd_per_class"][c])] + [_fmt(best[m]["score"].get(space, {}).get("fd_per_class", {}).get(c)) for m in sorted(best)] for c in classes]
            note = " (a few dozen images per class against as many real ones: far above FID at large n; compare with the floor)" if space == "fid" else ""
            lines += [f"{title} per class{note}:", ""]
            lines += _table(["class", "floor", *[f"{m} ({best[m]['subject'].get('setting', '')})" for m in sorted(best)]], rows) + [""]
        fid_rows = [[f"{c} {shorten(names[int(c)], 28)}", f"{floor['class_fidelity']['per_class'].get(c, float('nan')):.3f}"] + [f"{best[m]['score']['class_fidelity']['per_class'].get(c, float('nan')):.3f}" for m in sorted(best)] for c in classes]
        lines += ["Class fidelity (the classifier's accuracy on images of each requested class):", ""]
        lines += _table(["class", "real test", *sorted(best)], fid_rows) + [""]
        if per_class:
            lines += [f"![per-class domain FD]({per_class.name})", ""]
        lines += memorization_section(records, names)
        lines += ["## Samples (best setting of each model)", ""]
        missing = redraw_grids(folder, best.values(), names)
        for m in sorted(best):
            lines += [f"**{m}**, {best[m]['subject'].get('setting', '')}:", "", f"![{m}](grids/{Path(best[m]['subject']['grid']).name})", ""]
        if missing:
            lines += [f"Missing grids (their samples files are gone too; `medpfgm evaluate` makes both again): {', '.join(missing)}", ""]
    if ladder:
        rungs = [r for r in ("real", "blur", "noise", "hue", "class_swap", "pure_noise") if r in ladder["rungs"]]
        rows = [[COLUMNS.get(m, m), "yes" if ok else "**no**: " + "; ".join(ladder["failures"][m])] + [_fmt(ladder["rungs"][r][m]) for r in rungs] for m, ok in sorted(ladder["ranks"].items(), key=lambda kv: list(COLUMNS).index(kv[0]) if kv[0] in COLUMNS else len(COLUMNS))]
        lines += ["## Validity ladder", "", f"Real test images against the same real reference, then known degradations of them, then uniform noise "
                  f"({sum(ladder['setup']['counts'])} images). A metric must rank real < every degradation < noise (class swap counts only for class-aware metrics).", ""]
        lines += _table(["metric", "ranks the ladder", *rungs], rows) + [""]
    lines += ["## Reproduce", "", "```"]
    if (folder / "classifier" / "classifier.json").is_file():
        c = json.loads((folder / "classifier" / "classifier.json").read_text())
        cfg = c["config"]
        lines.append(f"medpfgm classify --dataset {dataset} --size {size} --out {folder}/classifier --epochs {cfg['epochs']} --width {cfg['width']} --seed {cfg['seed']}"
                     f"   # test accuracy {c['test'].get('accuracy', float('nan')):.3f}, AUC {c['test'].get('auc', float('nan')):.3f}")
    lines.append(f"medpfgm evaluate --ladder --dataset {dataset} --size {size}")
    for r in records:
        if r["subject"].get("run"):
            lines.append(f"medpfgm evaluate --run {r['subject']['run']} {solver_args(r['subject'])} -n {sum(r['setup']['counts'])} --seed {r['setup']['seed']}")
    for r in load_evaluations(folder, "evaluations_full") if records else []:
        if r["subject"].get("run"):
            lines.append(f"medpfgm evaluate --run {r['subject']['run']} {solver_args(r['subject'])} --full-reference -n {r['n']} "
                         f"--metrics {','.join(r['floor'])} --seed {r['setup']['seed']}")
    lines += [f"medpfgm report --dataset {dataset} --size {size}", "```", ""]
    text = "\n".join(lines)
    return atomic_write(folder / "README.md", lambda tmp: tmp.write_text(text))
