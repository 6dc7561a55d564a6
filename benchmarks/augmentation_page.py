"""The augmentation benchmark's page: results of the classifiers it trained (OUT/classifiers/*/classifier.json) and the
scores of its fills (OUT/quality/) into OUT/README.md, OUT/results.csv and OUT/per_class_recall.png.
``benchmarks/augmentation.py`` makes what this module reads; this module trains and draws nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from medpfgm.augment import read_provenance
from medpfgm.data import class_names
from medpfgm.evaluate.report import reading_section
from medpfgm.figures import _save, distinct_colors, legend_beside
from medpfgm.io import atomic_write
from medpfgm.run import training_seconds

METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "auc")
# A converged twin's name: <variant><suffix>, by what its stopping rule watches on the validation split (--monitor).
TWIN_SUFFIX = {"balanced_accuracy": "_conv", "loss": "_convloss"}


def twin_suffix(variant: str) -> str:
    """The converged-twin suffix ``variant`` ends with ("_conv", "_convloss"), or "" for an equal-step classifier."""
    return next((sfx for sfx in TWIN_SUFFIX.values() if variant.endswith(sfx)), "")


def classifier_dir(out: Path, variant: str, seed: int) -> Path:
    return out / "classifiers" / f"{variant}_s{seed}"


def classifier_done(out: Path, variant: str, seed: int) -> bool:
    return (classifier_dir(out, variant, seed) / "classifier.json").is_file()


def collect(out: Path, names: list[str], seeds: list[int]) -> pd.DataFrame:
    """One row per trained classifier of ``names`` × ``seeds``; those not trained yet are left out (a page built
    with --page-only while a benchmark still runs)."""
    rows = []
    for name in names:
        for seed in [s for s in seeds if classifier_done(out, name, s)]:
            meta = json.loads((classifier_dir(out, name, seed) / "classifier.json").read_text())
            rows.append({"variant": name, "seed": seed, **{m: meta["test"][m] for m in METRICS}, "recall": meta["test"]["per_class_recall"],
                         "train_images": sum(meta["train_counts"]), "width": meta["config"]["width"], "batch_size": meta["config"]["batch_size"],
                         "cpu_seconds": meta.get("train_seconds", float("nan")), "machine": meta.get("machine"),
                         "trained_on": meta.get("trained_on_md5")})  # fmt: skip
    return pd.DataFrame(rows)


def machines_line(df: pd.DataFrame) -> str:
    """Where the page's classifiers were trained: each machine with how many, most first ('not recorded' for
    classifiers older than the record, 2026-12-07); classifier seconds compare only within one machine."""
    machines = df["machine"] if "machine" in df else pd.Series([None] * len(df), dtype=object)
    return "; ".join(f"{name} ({count})" for name, count in machines.fillna("not recorded").value_counts().items())


def draw_lines(df: pd.DataFrame) -> list[str]:
    """A line for each variant whose seeds trained on different bytes of its training file (``trained_on_md5``,
    recorded since 2026-12-07): a fill redrawn from its provenance is not always bit-identical, so such a
    variant's spread mixes seed noise with draw noise. Seeds without the record are not counted."""
    if "trained_on" not in df:
        return []
    lines = []
    for variant, rows in df.dropna(subset=["trained_on"]).groupby("variant", sort=False):
        if rows.trained_on.nunique() > 1:
            draws = "; ".join(f"seed{'s' * (len(g) > 1)} {', '.join(map(str, sorted(g.seed)))}: {md5[:8]}…" for md5, g in rows.groupby("trained_on", sort=False))
            lines.append(f"- **{variant}** trained on different draws of its training file (MD5 {draws}).")
    return ["Seeds that saw different draws of the same fill (the spread holds draw noise too):", "", *lines, ""] if lines else []


def filter_control_path(out: Path, stem: str) -> Path:
    """Where the benchmark keeps a filtered fill's control (its filter's pass rate on real test images)."""
    return out / "quality" / f"{stem}_filter_on_real.json"


def tail_classes(lt_counts: list[int]) -> list[int]:
    """The rare classes: those with fewer long-tailed training images than the median class."""
    return [c for c, n in enumerate(lt_counts) if n < np.median(lt_counts)]


def mean_std(mean: float, std: float) -> str:
    """"0.845 ± 0.012", or "0.845" for one seed (no spread)."""
    return f"{mean:.3f}" if np.isnan(std) else f"{mean:.3f} ± {std:.3f}"


def verdicts(summary: pd.DataFrame, num_classes: int, baselines: tuple[str, ...] = ("resample", "classical")) -> list[str]:
    """Plain sentences: each fill's balanced accuracy, macro-F1 and tail recall against each baseline,
    called a gain or a loss only when the difference exceeds both seed spreads; then each
    train-on-synthetic classifier's balanced accuracy against chance and against real-only training
    (its tail recall says little: a classifier trained on balanced synthetic data guesses rare classes often)."""
    lines = []
    for variant in [v for v in summary.index if v.startswith("fill_")]:
        parts = []
        twin = twin_suffix(variant)  # a converged classifier: with baselines converged alike
        for base in [b + twin for b in baselines if b + twin in summary.index]:
            for metric in ("balanced_accuracy", "macro_f1", "tail_recall"):
                delta = summary.loc[variant, (metric, "mean")] - summary.loc[base, (metric, "mean")]
                spreads = summary.loc[variant, (metric, "std")], summary.loc[base, (metric, "std")]
                if np.isnan(spreads).any():  # one seed: no spread to judge by
                    word = "one seed, no verdict"
                else:
                    word = "within the seed spread" if abs(delta) <= max(spreads) else ("gain" if delta > 0 else "loss")
                parts.append(f"{metric.replace('_', ' ')} {delta:+.3f} vs {base} ({word})")
        lines.append(f"- **{variant}**: " + "; ".join(parts) + ".")
    for variant in [v for v in summary.index if v.startswith("tstr_")]:
        bal = summary.loc[variant, ("balanced_accuracy", "mean")]
        real = f", real-only {summary.loc['real', ('balanced_accuracy', 'mean')]:.3f}" if "real" in summary.index else ""
        lines.append(f"- **{variant}** (train on synthetic only): balanced accuracy {bal:.3f} against chance {1 / num_classes:.3f}{real}.")
    return lines


def table_head(title: str, text: str, columns: list[str]) -> list[str]:
    """A page section's first lines: its title, its text and a markdown table's header."""
    return [f"## {title}", "", text, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


SCORE_COLUMNS = ["FID (floor)", "domain FD (floor)", "class fidelity (floor)", "memorized: pixels / domain"]


def score_cells(record: dict) -> str:
    """An evaluation record's cells under SCORE_COLUMNS."""
    s, f, m = record["score"], record["floor"], record["memorization"]
    return (f"{s['fid']['fd']['mean']:.1f} ({f['fid']['fd']['mean']:.1f}) | {s['domain']['fd']['mean']:.2f} ({f['domain']['fd']['mean']:.2f}) | "
            f"{s['class_fidelity']['accuracy']:.3f} ({f['class_fidelity']['accuracy']:.3f}) | {m['pixel']['flagged']:.1%} / {m['domain']['flagged']:.1%}")  # fmt: skip


def downstream_cells(summary: pd.DataFrame, variant: str) -> str:
    """A variant's balanced accuracy | macro-F1 (mean ± std over seeds)."""
    row = summary.loc[variant]
    return " | ".join(mean_std(row[(k, "mean")], row[(k, "std")]) for k in ("balanced_accuracy", "macro_f1"))


def fill_cost(out: Path, variant: str, record: dict) -> str:
    """CPU hours a fill cost: its model's training (to the fill's step) + drawing the fill, as "T + S".
    Drawing is the fill's recorded sampling time, else (fills made before it was recorded) estimated from the
    quality evaluation's seconds per image times the images drawn, marked ≈."""
    made = read_provenance(out / f"{variant}.npz") or {}
    train = training_seconds(made["run"], made.get("run_step")) if "run" in made else None
    if made.get("sampling_seconds") is not None:
        drawing = f"{made['sampling_seconds'] / 3600:.2f}"
    elif made:
        drawn = sum(made["filter"]["drawn"]) if made.get("filter") else made["synthetic"]
        drawing = f"≈{drawn * record['subject']['seconds_per_image'] / 3600:.2f}"
    else:
        drawing = "–"
    return f"{train / 3600:.1f} + {drawing}" if train is not None else f"– + {drawing}"


def quality_lines(quality: dict[str, dict], summary: pd.DataFrame, out: Path) -> list[str]:
    """The fill models' image quality beside the downstream effect of their fills and their cost, one row per fill
    with classifiers so far."""
    quality = {variant: r for variant, r in quality.items() if variant in summary.index}
    if not quality:
        return []
    lines = table_head("Fill quality beside its downstream effect",
             "Each fill's model at the fill's sampler, scored as the dataset pages score models: 400 images against as many "
             "class-matched images of the full official training split (mean of 5 reference draws; floor: test vs train at the same n), "
             "and the memorization audit (share of synthetic images closer to a training image than 99 % of test images are; "
             "honest generators sit near 1 %; worst class in brackets). Does a better FID give a better classifier? "
             "Cost: CPU hours of training the fill's model + drawing the fill (one thread; ≈: estimated from the evaluation's time per image).",
             ["fill", "model (step)", "sampler", *SCORE_COLUMNS[:-1], "memorized: pixels / domain (worst class)", "balanced accuracy", "macro-F1", "cost, CPU h"])  # fmt: skip
    for variant, r in quality.items():
        subject, m = r["subject"], r["memorization"]
        worst = {space: max(m[space]["flagged_per_class"].values()) for space in ("pixel", "domain")}
        precision = ", bf16" if subject.get("precision") == "bfloat16" else ""
        lines.append(f"| {variant} | {subject['label']} ({subject['step']}) | {subject['setting']} ({subject['nfe']:.0f} NFE{precision}) | {score_cells(r)} "
                     f"({worst['pixel']:.1%} / {worst['domain']:.1%}) | {downstream_cells(summary, variant)} | {fill_cost(out, variant, r)} |")  # fmt: skip
    lines += ["", "Closest synthetic / training pairs of each fill model (pixel distance; is any a copy of a patient's image?):", ""]
    figures: dict[str, str] = {}  # one per model and sampler, named by its first fill
    for variant, r in quality.items():
        if r["memorization"].get("figure"):
            figures.setdefault(f"quality/{r['setup']['dataset']}_{r['setup']['size']}/{r['memorization']['figure']}", variant)
    lines += [f"![{variant} pairs]({figure})" for figure, variant in figures.items()]
    return lines + [""]


def fill_images_lines(scores: dict[str, dict], summary: pd.DataFrame) -> list[str]:
    """The fills' own images beside their downstream effect, one row per fill file scored (``fill_images_record``)."""
    scores = {variant: r for variant, r in scores.items() if variant in summary.index}
    if not scores:
        return []
    lines = table_head("Each fill's own images",
             "The synthetic images of each fill file — what its classifiers saw, after a filter or a fraction — scored as above: up to 400 "
             "of them in the training split's class proportions over the classes the fill fills (the largest class has no synthetic "
             "image), against as many class-matched training images; floors and scores are of these classes, so they differ from the "
             "model rows above.",
             ["fill", "images scored", *SCORE_COLUMNS, "balanced accuracy", "macro-F1"])  # fmt: skip
    for variant, r in scores.items():
        lines.append(f"| {variant} | {sum(r['setup']['counts'])} | {score_cells(r)} | {downstream_cells(summary, variant)} |")
    return lines + [""]


def audit_lines(audits: dict[str, dict], names: list[str]) -> list[str]:
    """The page's audit of every fill image: flagged shares overall and in the worst class, distances, closest pairs."""
    if not audits:
        return []
    lines = table_head("Memorization audit of every fill image",
             "Every synthetic image of the fill against the real images it was added to (the long-tailed set its model trained on): "
             "flagged when closer to one of them than 99 % of the official test images are (honest generators sit near 1 %); "
             "medians: Euclidean distance to the nearest of those images, pixels scaled to [0, 1].",
             ["fill", "synthetic images", "flagged: pixels / domain", "worst class: pixels / domain", "median distance: synthetic / test"])  # fmt: skip
    for variant, a in audits.items():
        worst = {space: max(a[space]["flagged_per_class"].items(), key=lambda kv: kv[1]) for space in ("pixel", "domain")}
        lines.append(f"| {variant} | {a['n_fake']} | {a['pixel']['flagged']:.1%} / {a['domain']['flagged']:.1%} | "
                     f"{names[int(worst['pixel'][0])]} {worst['pixel'][1]:.1%} / {names[int(worst['domain'][0])]} {worst['domain'][1]:.1%} | "
                     f"{a['pixel']['median_fake_to_train']:.2f} / {a['pixel']['median_test_to_train']:.2f} |")  # fmt: skip
    lines += ["", *[f"![{variant} closest pairs](quality/{a['figure']})" for variant, a in audits.items()], ""]
    return lines


def filter_lines(out: Path, names: list[str]) -> list[str]:
    """What each filtered fill kept, per class, from its provenance; beside it, where measured, the share of real
    test images the same filter passes (``filter_on_real``)."""
    lines = []
    for path in sorted(out.glob("fill_*.npz.provenance.json")):
        f, stem = json.loads(path.read_text()).get("filter"), path.name.split(".npz")[0]
        if f:
            per_class = ", ".join(f"{n} {k}/{d}" for n, k, d in zip(names, f["kept"], f["drawn"]))
            lines.append(f"- **{stem}** (p ≥ {f['min_confidence']:g} for the intended class, real-only classifier): kept / drawn per class: {per_class}.")
            control = filter_control_path(out, stem)
            if control.is_file():
                rates = ", ".join(f"{n} {r:.1%}" for n, r in zip(names, json.loads(control.read_text())["pass_rate"]))
                lines.append(f"  The same filter passes, of the official test split's real images: {rates}.")
    return ["## What the filters kept", "", *lines, ""] if lines else []


def recall_figure(recall: pd.Series, ticks: list[str], path: Path) -> Path:
    """Mean test recall per class (variant -> (K,) array) as one line per variant, the legend beside the axes: the
    equal-step variants on the left panel, the converged twins on the right (pages hold up to ~30 variants)."""
    import matplotlib.pyplot as plt

    converged = [v for v in recall.index if twin_suffix(v)]
    panels = [("equal optimizer steps", [v for v in recall.index if v not in converged])] + ([("converged", converged)] if converged else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(max(6, 0.9 * len(ticks)) * len(panels) + 3.5, 4.5), sharey=True, squeeze=False, layout="constrained")  # constrained: room for the legends
    for ax, (title, variants) in zip(axes[0], panels):
        palette = distinct_colors(len(variants))
        for i, variant in enumerate(variants):
            tstr = variant.startswith("tstr_")  # a different question (is there class signal?): drawn faint
            ax.plot(range(len(ticks)), recall[variant], marker="o", label=variant, color=palette[i], linestyle="--" if tstr else "-",
                    alpha=0.45 if tstr else 1.0, linewidth=1 if tstr else 1.8)  # fmt: skip
        ax.set_xticks(range(len(ticks)), ticks, rotation=30, ha="right", fontsize=8)
        ax.set(ylim=(0, 1), title=f"{title} (training count in brackets)")
        legend_beside(ax)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test recall (mean over seeds)")
    return _save(fig, path, palette=True)


def write_report(out: Path, df: pd.DataFrame, dataset: str, command: str, lt_counts: list[int], steps: int, quality: dict | None = None,
                 audits: dict | None = None, own_images: dict | None = None) -> None:  # fmt: skip
    names = class_names(dataset)
    tail = tail_classes(lt_counts)
    df = df.assign(tail_recall=[float(np.mean([r[c] for c in tail])) for r in df.recall])
    columns = [*METRICS, "tail_recall"]
    summary = df.groupby("variant", sort=False)[columns].agg(["mean", "std"])
    from medpfgm.evaluate.pipeline import machine

    widths, batches = sorted(df.width.unique()), sorted(df.batch_size.unique())
    lines = [f"# Class-balanced augmentation: {dataset}, long-tailed training counts {lt_counts}", ""]
    lines += [f"Page written on {machine()}; classifiers trained on: {machines_line(df)}.", ""]
    lines += [f"Mean ± std over seeds {sorted(df.seed.unique().tolist())}, official test split; every classifier\n"
              f"(ResNet-18 layout, width {', '.join(map(str, widths))}) trained for {steps} optimizer steps of {', '.join(map(str, batches))} images. "
              f"Tail recall: mean test recall of the classes with fewer training images than the median class ({', '.join(names[c] for c in tail)}).",
              "", "```", command, "```", ""]  # fmt: skip
    lines += reading_section(out)
    lines += ["| variant | train images | classifier s | " + " | ".join(columns) + " |", "|---|---|---|" + "---|" * len(columns)]
    all_seeds = df.seed.nunique()
    for variant, row in summary.iterrows():
        rows = df[df.variant == variant]
        n, seconds = int(rows.train_images.iloc[0]), float(rows.cpu_seconds.mean())
        name = variant if len(rows) == all_seeds else f"{variant} ({len(rows)} of {all_seeds} seeds)"
        lines.append(f"| {name} | {n} | {seconds:.0f} | " + " | ".join(mean_std(row[(m, 'mean')], row[(m, 'std')]) for m in columns) + " |")
    lines += ["", *draw_lines(df), "## Synthetic fill against the real-data baselines", "", *verdicts(summary, len(names)), ""]
    lines += quality_lines(quality or {}, summary, out)
    lines += fill_images_lines(own_images or {}, summary)
    lines += audit_lines(audits or {}, names)
    lines += filter_lines(out, names)
    recall = df.groupby("variant", sort=False)["recall"].apply(lambda r: np.mean(np.stack(r.to_list()), axis=0))
    recall_figure(recall, [f"{n[:12]} ({c})" for n, c in zip(names, lt_counts)], out / "per_class_recall.png")
    lines += ["", "![per-class recall](per_class_recall.png)", ""]
    grids = sorted(out.glob("fill_*.png"))
    if grids:
        lines += ["## What each fill adds (synthetic images only, one row per class)", ""]
        lines += [f"![{g.stem}]({g.name})" for g in grids] + [""]
    atomic_write(out / "README.md", lambda tmp: tmp.write_text("\n".join(lines)))
    atomic_write(out / "results.csv", lambda tmp: df.drop(columns="recall").to_csv(tmp, index=False))
