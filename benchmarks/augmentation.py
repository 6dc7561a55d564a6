"""The class-balanced augmentation benchmark: long-tailed real data, with and without synthetic fill.

    python benchmarks/augmentation.py --dataset bloodmnist --ratio 100 \
        --fill pfgm=RUN_A@heun:20 --fill pfgmpp_d128=RUN_B@heun:18 --fill ddpm=RUN_C@ddim:50 --seeds 0,1,2 \
        --out reports/augmentation/bloodmnist_lt100

Every step is a medpfgm command and is skipped when its output exists, so a killed benchmark
resumes. Generative runs must be trained on OUT/data (the long-tailed set): `medpfgm longtail`
makes it first; train with `--data-root OUT/data` (`augment` refuses a run trained on other images).
Every classifier gets the same number of optimizer steps (--steps), so a variant with more training
images gains data, not updates. Variants, each over the seeds:
  (a) real        long-tailed real only
  (b) resample    (a) with class-balanced batches      (b') reweight: with inverse-frequency loss weights
  (c) classical   (b) with classical augmentation
  (d..) fill_<m>  real + the synthetic fill of model m, up to the largest class
  (g) full        the full official training set (upper bound; skipped without --ratio)
  tstr_<m>        train on the fill's synthetic images only, test on real
``--variants`` adds, for every fill m, fill_<m>_<v> (issue 19):
  classical       the fill with classical augmentation (and class-balanced batches, as (c))
  frac25, frac50  a fill of 25 % / 50 % of each class's gap (its own fill file)
  weight0.5       the fill with its synthetic images at half the loss weight
  filter0.8       only synthetic images that a real-only classifier (trained as variant (a), seed 0, into
                  classifiers/filter_real_s0: the long-tailed real set only, never the full or test set) gives
                  their class with p >= 0.8
  guide0.5        the fill drawn with classifier-free guidance w = 0.5 (a fill model trained with label dropout)
``--vary A,B`` gives the variants and converged twins to those fills only (default: all). ``--quality``
scores each fill's model at the fill's sampler as the dataset pages do (n 400, FID, domain FD, class
fidelity) with the memorization audit, into OUT/quality/, beside the fill's downstream effect on the page.
With ``--quality`` each fill file's own synthetic images are scored too (what a filter kept, not its model's
draws; OUT/quality/<dataset>_<size>/evaluations/<fill>_images.json). Every fill file present is also audited
whole: each synthetic image's nearest real image of the set it fills (pixels and domain features) against the
official test images' (OUT/quality/<fill>_audit.json and its pairs).
``--converged P`` trains every variant a second time to convergence (validation balanced accuracy,
patience P epochs, at most --max-epochs), as <variant>_conv: equal steps show a fill's real images less often;
``--converged-only resample,classical,full,fill_m`` limits the twins to those (converged classifiers cost ~10× more);
``--converged-monitor balanced_accuracy,loss`` trains a twin for each stopping rule (loss: the class-balanced validation
cross-entropy, as <variant>_convloss).
Results: OUT/README.md (mean ± std over seeds, classifier CPU seconds), OUT/results.csv, OUT/per_class_recall.png;
``--page-only`` rebuilds them from what is made so far (while a benchmark runs on; rows name their seeds when some
are missing, and one seed gets no verdict). OUT/READING.md, hand-written, leads the page.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # its page module, also when loaded by path (tests)

from medpfgm.augment import read_provenance, read_training_file  # noqa: E402
from medpfgm.cli import main as medpfgm  # noqa: E402
from medpfgm.data import class_names, data_file  # noqa: E402
from medpfgm.figures import class_grid  # noqa: E402
from medpfgm.io import write_json  # noqa: E402

from augmentation_page import TWIN_SUFFIX, classifier_dir, classifier_done, collect, filter_control_path, write_report  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# The filter's real-only classifier: trained as variant (a), seed 0, in a folder of its own, so that training it again
# (its weights are not kept in git) never changes a result row (the same seed differs by a few points across CPUs).
FILTER_SOURCE = "filter_real"


PAGE_ONLY = False  # --page-only: no step runs; the page is built from the classifiers and scores already made


def run(*args: str) -> None:
    if PAGE_ONLY:
        return
    print("$ medpfgm " + " ".join(args), flush=True)
    if medpfgm(list(args)) != 0:
        sys.exit(f"step failed: medpfgm {' '.join(args)}")


def parse_fill(item: str) -> tuple[str, str, dict, list[str]]:
    """NAME=RUN[@SOLVER:STEPS[:bf16][:VARIANT…]] -> (name, run folder, sampler settings, fill-file variants).
    Sampler settings: {} for the recipe's, else solver and steps, and precision "bfloat16" when the network is to
    run in bf16 autocast. VARIANTs (frac<p>, filter<q>, guide<w>) make this fill's file differently, so that a
    guided or filtered fill can be a fill of its own (its own sampler, its own train-on-synthetic twin)."""
    name, _, rest = item.partition("=")
    run_dir, _, sampler = rest.partition("@")
    solver, _, tail = sampler.partition(":")
    steps, *options = tail.split(":")
    made = [o for o in options if o != "bf16"]
    if not name or not run_dir or (steps and not steps.isdigit()) or options.count("bf16") > 1 or any(not o or o.startswith(("classical", "weight")) for o in made):
        sys.exit(f"--fill wants NAME=RUN[@SOLVER:STEPS[:bf16][:frac<p>|filter<q>|guide<w>]] (classical and weight are --variants), got '{item}'")
    settings = {"solver": solver} if solver else {}
    settings |= ({"steps": int(steps)} if steps else {}) | ({"precision": "bfloat16"} if "bf16" in options else {})
    return name, run_dir, settings, made


def sampler_args(sampler: dict) -> list[str]:
    """{solver, steps, precision} -> augment's command-line arguments."""
    flags = []
    for key, value in sampler.items():
        if key != "precision":
            flags += [f"--{key}", str(value)]
        elif value == "bfloat16":
            flags.append("--bf16")
    return flags


def check_fill(path: Path, run_dir: str, target: str, sampler: dict) -> None:
    """Exit if a fill (its file or its committed provenance) was made by another run, target or sampler
    than asked for now, or exists without provenance; a fill not made yet passes."""
    made = read_provenance(path)
    if made is None:
        if path.is_file():
            sys.exit(f"{path} has no provenance record; delete it to make it again")
        return
    asked = {"run": str(run_dir), "target": target, **sampler}
    differ = [f"{k} {made.get(k)!r} (asked {v!r})" for k, v in asked.items() if str(made.get(k)) != str(v)]
    if differ:
        sys.exit(f"{path} was made with {', '.join(differ)}; delete it to make it again")


def fill_needed(out: Path, name: str, seeds: list[int], users: list[str] | None = None) -> bool:
    """A fill file is (re)made only for a classifier that still needs it: fills are large and remade
    from their provenance (run, sampler, seed, md5), so a finished benchmark keeps only its results.
    ``users``: the variants trained on it (default: fill_<name> and tstr_<name>)."""
    users = users or [f"fill_{name}", f"tstr_{name}"]
    return not all(classifier_done(out, variant, seed) for variant in users for seed in seeds)


def draw_fill(path: Path, dataset: str, title: str) -> Path | None:
    """The synthetic part of a fill file as a per-class grid beside it (``fill_<name>.png``); None when the
    fill has no synthetic image (a filter that kept none)."""
    images, labels, synthetic = read_training_file(path)
    if not synthetic.any():
        return None
    return fill_grid(images[synthetic], labels[synthetic], dataset, path.with_suffix(".png"), title)


def fill_grid(images: np.ndarray, labels: np.ndarray, dataset: str, path: Path, title: str) -> Path:
    """Synthetic images uint8 (n, H, W, C) with labels (n,) as a fill picture: 12 a class, one row per class."""
    return class_grid(images, labels, class_names(dataset), path, per_class=12, title=title)


QUALITY_METRICS = "domain,fid,memorization"


def page_classifier(dataset: str, size: int) -> Path:
    """The dataset page's evaluation classifier, the one every fill score and audit here uses (found from the
    repository, not the working directory)."""
    from medpfgm.evaluate.pipeline import report_dir

    return report_dir(dataset, size, ROOT / "reports") / "classifier"


def quality_record(out: Path, run_dir: str, sampler: dict, guidance: float) -> dict | None:
    """The evaluation in OUT/quality/ of ``run_dir`` at ``sampler`` (its solver and steps where given) and
    guidance weight, else None (the fills' own-image scores there name their samples, not a run)."""
    for path in sorted((out / "quality").glob("*/evaluations/*.json")):
        record = json.loads(path.read_text())
        s = record["subject"]
        if ("run" in s and Path(s["run"]) == Path(run_dir) and s["solver"] == sampler.get("solver", s["solver"]) and s["steps"] == sampler.get("steps", s["steps"])
                and float(s.get("guidance") or 0) == guidance):  # fmt: skip
            return record
    return None


def score_fill_model(out: Path, run_dir: str, sampler: dict, guidance: float, dataset: str, size: int, common: list[str]) -> dict:
    """Score a fill's model at the fill's sampler the way the dataset pages score models (n 400 against
    class-matched images of the full official training split, with floors; the dataset page's evaluation
    classifier) plus the memorization audit, into OUT/quality/."""
    run("evaluate", "--run", run_dir, *sampler_args(sampler), *(["--guidance", f"{guidance:g}"] if guidance else []), "--metrics", QUALITY_METRICS,
        "--classifier", str(page_classifier(dataset, size)), "--reports", str(out / "quality"), "--quiet", *common)  # fmt: skip
    return quality_record(out, run_dir, sampler, guidance)


def audit_fill(out: Path, path: Path, dataset: str, size: int, data_root: str | None) -> dict | None:
    """The memorization audit of every synthetic image of a fill against the real images it fills (the set its
    model was trained on; threshold: the 1st percentile of official test-to-those distances), in pixels and the
    dataset page classifier's domain space, into OUT/quality/<fill>_audit.json with its closest pairs drawn
    beside; the record once made, None while the fill file is not there (fills are remade only when needed)."""
    record_path = out / "quality" / f"{path.stem}_audit.json"
    if record_path.is_file():
        return json.loads(record_path.read_text())
    if PAGE_ONLY or not path.is_file():
        return None
    from medpfgm.data import load_split
    from medpfgm.evaluate.features import domain_space
    from medpfgm.evaluate.pipeline import audit_with_pairs, checked_classifier

    images, labels, synthetic = read_training_file(path)
    test = load_split(dataset, size, "test", data_root)
    classifier, _ = checked_classifier(page_classifier(dataset, size), dataset, size, "cpu")
    record_path.parent.mkdir(parents=True, exist_ok=True)
    record = audit_with_pairs(images[synthetic], labels[synthetic], images[~synthetic], test.images, test.num_classes, domain_space(classifier),
                              record_path.with_name(f"{path.stem}_pairs.png"), f"{path.stem}, all {int(synthetic.sum())} synthetic images")  # fmt: skip
    write_json(record_path, record)
    return record


def fill_images_record(out: Path, path: Path, dataset: str, size: int, data_root: str | None, common: list[str]) -> dict | None:
    """The fill's own synthetic images scored as the fill models are (FID, domain FD, class fidelity, audit against the
    full training split; the dataset page's classifier), so that a filtered fill is scored on what it kept: up to 400
    of them in the training split's class proportions over the classes the fill fills (the largest class gets none),
    into OUT/quality/<dataset>_<size>/evaluations/<fill>_images.json; the record once made, None while the fill file
    is not there."""
    stem = f"{path.stem}_images"
    record_path = out / "quality" / f"{dataset}_{size}" / "evaluations" / f"{stem}.json"
    if record_path.is_file():
        return json.loads(record_path.read_text())
    if PAGE_ONLY or not path.is_file():
        return None
    from medpfgm.data import load_split
    from medpfgm.evaluate.pipeline import DEFAULT_N
    from medpfgm.evaluate.protocol import max_stratified_n, stratified_counts
    from medpfgm.io import save_images_npz

    images, labels, synthetic = read_training_file(path)
    train, test = (load_split(dataset, size, split, data_root) for split in ("train", "test"))
    have = np.bincount(labels[synthetic], minlength=train.num_classes)
    proportions = np.where(have > 0, train.class_counts(), 0)
    counts = stratified_counts(proportions, min(DEFAULT_N, max_stratified_n(np.minimum(test.class_counts(), have), proportions)))
    pick = np.concatenate([np.flatnonzero(synthetic & (labels == c))[:k] for c, k in enumerate(counts)])
    samples = save_images_npz(out / "quality" / f"{stem}.npz", images[pick], labels[pick])  # evaluate's input only: the fill is the record
    run("evaluate", "--samples", str(samples), "--dataset", dataset, "--metrics", QUALITY_METRICS, "--classifier", str(page_classifier(dataset, size)),
        "--reports", str(out / "quality"), "--out", str(record_path), "--quiet", *common)  # fmt: skip
    samples.unlink()
    return json.loads(record_path.read_text())


def filter_on_real(out: Path, path: Path, dataset: str, size: int, data_root: str | None) -> dict | None:
    """The control for what a filtered fill kept: per class, the share of the official test split's *real* images
    that its filter passes (gives their own class at least the fill's min confidence) — low there too, and the filter,
    not the synthetic images, is what empties a class. OUT/quality/<fill>_filter_on_real.json once made; None for an
    unfiltered fill, or while the filter's weights (not in git) are missing or are not those that made the fill."""
    record_path = filter_control_path(out, path.stem)
    if record_path.is_file():
        return json.loads(record_path.read_text())
    made = (read_provenance(path) or {}).get("filter")
    if PAGE_ONLY or not made or not (Path(made["classifier"]) / "classifier.pt").is_file():
        return None
    import torch

    from medpfgm.augment import confident
    from medpfgm.classifier import load_classifier, predict_proba
    from medpfgm.data import load_split

    classifier, meta = load_classifier(made["classifier"], torch.device("cpu"))
    if meta["sha256"] != made["sha256"]:
        return None
    test = load_split(dataset, size, "test", data_root)
    passed = confident(predict_proba(classifier, test.images), test.labels, made["min_confidence"])
    record = {"classifier": made["classifier"], "sha256": made["sha256"], "min_confidence": made["min_confidence"],
              "test_counts": test.class_counts().tolist(), "pass_rate": [float(passed[test.labels == c].mean()) for c in range(test.num_classes)]}  # fmt: skip
    write_json(record_path, record)
    return record


def fill_variant(variant: str, out: Path) -> tuple[list[str], list[str], dict]:
    """A --variants entry: (extra augment arguments, extra classify arguments, what its fill's provenance must say).
    No augment arguments: the variant trains on the plain fill's file."""
    if variant == "classical":
        return [], ["--balanced", "--augment"], {}
    if variant.startswith("frac") and variant[4:].isdigit():
        fraction = int(variant[4:]) / 100
        return ["--fill-fraction", f"{fraction:g}"], [], {"fill_fraction": fraction}
    if variant.startswith("weight"):
        return [], ["--synthetic-weight", variant[6:]], {}
    if variant.startswith("filter"):
        return ["--filter", str(classifier_dir(out, FILTER_SOURCE, 0)), "--min-confidence", variant[6:]], [], {}
    if variant.startswith("guide"):
        return ["--guidance", variant[5:]], [], {"guidance": float(variant[5:])}
    sys.exit(f"unknown fill variant '{variant}'; use classical, frac<percent>, weight<w>, filter<q> or guide<w>")


def own_variants(made: list[str], out: Path) -> tuple[list[str], list[str], dict]:
    """A fill's own file variants (``parse_fill``) merged: (augment arguments, [], what its provenance must say)."""
    augment_args, expected = [], {}
    for variant in made:
        a, _, e = fill_variant(variant, out)
        augment_args, expected = augment_args + a, expected | e
    return augment_args, [], expected


def has_converged_twin(name: str, patience: int | None, unvaried: set[str], only: set[str] | None) -> bool:
    """Whether variant ``name`` is also trained to convergence (as <name>_conv): only with --converged, never for the
    fills outside --vary (a twin would remake their fills), and within --converged-only where given."""
    return bool(patience) and name not in unvaried and (only is None or name in only)


def classifiers_of(users: list[str], twin, suffixes: tuple[str, ...] = ("_conv",)) -> list[str]:
    """The classifiers trained on one fill file: each variant in ``users`` at equal steps, and its converged twins
    (<variant><suffix>) where ``twin(variant)`` says it has them — a fill is remade only while one of these is missing."""
    return [*users, *(f"{user}{sfx}" for user in users if twin(user) for sfx in suffixes)]


def variants(lt_file: Path, fills: dict[str, Path], with_full: bool, extra: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
    """Variant name -> the classify arguments that define its training data and recipe; ``extra``: the fill
    variants' names and arguments."""
    out = {
        "real": ["--train-file", str(lt_file)],
        "resample": ["--train-file", str(lt_file), "--balanced"],
        "reweight": ["--train-file", str(lt_file), "--reweight"],
        "classical": ["--train-file", str(lt_file), "--balanced", "--augment"],
    }
    for name, path in fills.items():
        out[f"fill_{name}"] = ["--train-file", str(path)]
        out[f"tstr_{name}"] = ["--train-file", str(path), "--synthetic-only"]
    out.update(extra or {})
    if with_full:  # a dataset used as it is (no --ratio) is its own full set
        out["full"] = []
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="bloodmnist")
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--ratio", type=float, help="imbalance ratio; omit to use the dataset as it is")
    p.add_argument("--fill", action="append", default=[], help="NAME=RUN[@SOLVER:STEPS[:bf16][:VARIANT…]]: a generative run trained on OUT/data and its sampler "
                   "(default: the run's recipe; bf16: the network in bfloat16 autocast; VARIANT: frac<p>, filter<q> or guide<w>, how this fill's file is made)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=300, help="classifier optimizer steps, the same for every variant")
    p.add_argument("--target", default="balanced", help="augment's fill target: balanced (up to the largest class) or N images per class")
    p.add_argument("--out", required=True)
    p.add_argument("--data-root")
    p.add_argument("--variants", default="", help="fill variants for every fill: classical, frac25, frac50, weight0.5, filter0.8 (see above)")
    p.add_argument("--vary", help="comma-separated fill names that get the --variants and the converged twins (default: every fill)")
    p.add_argument("--quality", action="store_true", help="also score each fill model at its fill's sampler as the dataset pages do "
                   "(n 400 class-matched, FID, domain FD, class fidelity, memorization audit) into OUT/quality/, shown beside its downstream effect")
    p.add_argument("--converged", type=int, help="also train every variant to convergence with this patience (epochs), as <variant>_conv")
    p.add_argument("--converged-only", help="comma-separated variants that get the converged twin (default: every baseline and every variant of the --vary fills)")
    p.add_argument("--converged-monitor", default="balanced_accuracy", help=f"comma-separated stopping rules of the converged twins, each a twin: {', '.join(TWIN_SUFFIX)}")
    p.add_argument("--max-epochs", type=int, default=60, help="the cap of a converged classifier's epochs")
    p.add_argument("--page-only", action="store_true", help="train and draw nothing: rebuild the page from what is made (rows name their seeds when some are missing)")
    args = p.parse_args()
    global PAGE_ONLY
    PAGE_ONLY = args.page_only
    monitors = args.converged_monitor.split(",")
    if bad := [m for m in monitors if m not in TWIN_SUFFIX]:
        sys.exit(f"--converged-monitor {bad[0]!r} is not one of {', '.join(TWIN_SUFFIX)}")
    suffixes = tuple(TWIN_SUFFIX[m] for m in monitors)
    out, seeds = Path(args.out), [int(s) for s in args.seeds.split(",")]
    data = out / "data"
    common = ["--data-root", args.data_root] if args.data_root else []
    lt_file = data_file(args.dataset, args.size, data)
    if not lt_file.is_file():
        run("longtail", "--dataset", args.dataset, "--size", str(args.size), "--ratio", str(args.ratio or 1), "--out", str(data), *common)

    fill_items = [parse_fill(item) for item in args.fill]
    fill_variants = [v for v in args.variants.split(",") if v]
    varied = {name for name, *_ in fill_items if args.vary is None or name in args.vary.split(",")}
    unvaried = {f"{kind}_{name}" for name, *_ in fill_items if name not in varied for kind in ("fill", "tstr")}  # no converged twin: it would remake their fills
    converged_only = set(args.converged_only.split(",")) if args.converged_only else None

    def converged_twin(name: str) -> bool:
        return has_converged_twin(name, args.converged, unvaried, converged_only)

    equal_steps = ["--steps", str(args.steps)]

    def fit(variant: str, seed: int, budget: list[str], extra: list[str]) -> None:
        """One classifier into classifiers/<variant>_s<seed>: ``budget`` (steps or convergence), ``extra`` its data and recipe."""
        run("classify", "--dataset", args.dataset, "--size", str(args.size), "--out", str(classifier_dir(out, variant, seed)), *budget, "--seed", str(seed), "--quiet", *extra, *common)

    def classify(name: str, extra: list[str]) -> None:
        """Every seed of one variant: at the equal step budget, and converged (as <name>_conv, <name>_convloss) when asked."""
        budgets = {name: equal_steps}
        for monitor in monitors if converged_twin(name) else []:
            watch = ["--monitor", monitor] if monitor != "balanced_accuracy" else []  # the default: commands of older twins unchanged
            budgets[f"{name}{TWIN_SUFFIX[monitor]}"] = ["--patience", str(args.converged), "--epochs", str(args.max_epochs), *watch]
        for variant, budget in budgets.items():
            for seed in seeds:
                if not classifier_done(out, variant, seed):
                    fit(variant, seed, budget, extra)

    real_plan = variants(lt_file, {}, with_full=False)
    for name, extra in real_plan.items():
        classify(name, extra)
    owns = {name: own_variants(made, out) for name, *_, made in fill_items}  # how each fill's own file is made (a guided or filtered fill)
    fills, extra_plan = {}, {}
    for name, run_dir, sampler, _ in fill_items:
        files: dict[Path, tuple[list[str], dict, list[str]]] = {}  # fill file -> (augment args, provenance asked, its variants)
        for variant in ["", *(fill_variants if name in varied else [])]:
            augment_args, classify_args, expected = fill_variant(variant, out) if variant else owns[name]
            path = out / f"fill_{name}_{variant}.npz" if variant and augment_args else out / f"fill_{name}.npz"
            users = [f"fill_{name}_{variant}"] if variant else [f"fill_{name}", f"tstr_{name}"]
            files.setdefault(path, (augment_args, expected, []))[2].extend(classifiers_of(users, converged_twin, suffixes))
            if variant:
                extra_plan[f"fill_{name}_{variant}"] = ["--train-file", str(path), *classify_args]
            else:
                fills[name] = path
        for path, (augment_args, expected, users) in files.items():
            check_fill(path, run_dir, args.target, {**sampler, **expected})
            if not path.is_file() and fill_needed(out, name, seeds, users):
                if "--filter" in augment_args and not PAGE_ONLY and not (classifier_dir(out, FILTER_SOURCE, 0) / "classifier.pt").is_file():
                    (classifier_dir(out, FILTER_SOURCE, 0) / "classifier.json").unlink(missing_ok=True)  # weights are not kept in git: train it again
                    fit(FILTER_SOURCE, 0, equal_steps, real_plan["real"])
                run("augment", "--run", run_dir, "--target", args.target, "--out", str(path), "--data-root", str(data), "--quiet", *sampler_args(sampler), *augment_args)
            if path.is_file() and not path.with_suffix(".png").is_file() and expected.get("fill_fraction", 1) == 1:  # a partial fill's grid repeats its parent's
                draw_fill(path, args.dataset, f"{path.stem}: synthetic images only ({' '.join(map(str, sampler.values())) or 'recipe sampler'})")
    plan = variants(lt_file, fills, with_full=args.ratio not in (None, 1), extra=extra_plan)
    for name, extra in plan.items():
        classify(name, extra)
    quality = {}  # classifier variant -> its fill model's evaluation record
    if args.quality:
        for name, run_dir, sampler, _ in fill_items:
            guided = {f"fill_{name}_{v}": float(v[5:]) for v in fill_variants if v.startswith("guide") and f"fill_{name}_{v}" in plan}
            for variant, guidance in {f"fill_{name}": owns[name][2].get("guidance", 0.0), **guided}.items():
                quality[variant] = quality_record(out, run_dir, sampler, guidance) or score_fill_model(out, run_dir, sampler, guidance, args.dataset, args.size, common)
        quality = {variant: record for variant, record in quality.items() if record}  # --page-only: scored ones only
    first_user = {}  # fill file -> the first variant trained on it (--train-file's value)
    for variant, extra in plan.items():
        if variant.startswith("fill_"):
            first_user.setdefault(Path(extra[1]), variant)
    audits, own_images = {}, {}  # fill variant -> the audit of all its synthetic images; the score of its own images (made while its file is there)
    for path, variant in first_user.items():
        if record := audit_fill(out, path, args.dataset, args.size, args.data_root):
            audits[variant] = record
        if args.quality and (record := fill_images_record(out, path, args.dataset, args.size, args.data_root, common)):
            own_images[variant] = record
        filter_on_real(out, path, args.dataset, args.size, args.data_root)
    plan = {**plan, **{f"{name}{sfx}": extra for sfx in suffixes for name, extra in plan.items() if converged_twin(name)}}
    lt_counts = read_provenance(lt_file)["train_counts"]
    write_report(out, collect(out, list(plan), seeds), args.dataset, "python " + " ".join(a for a in sys.argv if a != "--page-only"), lt_counts, args.steps, quality, audits, own_images)
    print(f"wrote {out / 'README.md'}")


if __name__ == "__main__":
    main()
