"""What ``medpfgm evaluate`` does: pick the real pools, make or read the samples, score, write JSON.

One evaluation = one subject (a run with a solver setting, or a samples file) scored against the real
data of its dataset and size; the result file sits in ``reports/<dataset>_<size>/evaluations/`` with a
per-class sample grid in ``grids/``, and ``medpfgm report`` builds the page from those files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from medpfgm.classifier import load_classifier
from medpfgm.catalog import METRIC_SPACES, METRICS, parse_metrics  # noqa: F401 (re-exported)
from medpfgm.data import NPZ_ERRORS, Split, class_names, read_image_file
from medpfgm.errors import MedpfgmError
from medpfgm.evaluate.evaluate import Evaluator, cached_features, full_reference_score
from medpfgm.evaluate.features import FeatureUnavailable, RadiomicsSpace, domain_space, inception_space
from medpfgm.evaluate.protocol import ImageSet, max_stratified_n, stratified_counts
from medpfgm.figures import evaluation_grid
from medpfgm.io import save_images_npz, write_json
from medpfgm.machine import machine

DEFAULT_N = 400
FULL_REFERENCE_N = 2000  # generated images of the large-n protocol (issue: at least 2,000)


def report_dir(dataset: str, size: int, reports: str | Path = "reports") -> Path:
    return Path(reports) / f"{dataset}_{size}"


def eval_counts(train: Split, test: Split, n: int | None) -> np.ndarray:
    """Per-class counts of an evaluation set: n images in the training split's class proportions.

    The default n is 400, capped so that the test split can supply the same counts for the floor.
    """
    cap = max_stratified_n(test.class_counts(), train.class_counts())
    if n is not None and n > cap:
        raise MedpfgmError(f"-n {n} is more than the {train.dataset} test split can match class by class (at most {cap})")
    return stratified_counts(train.class_counts(), n or min(DEFAULT_N, cap))


def build_spaces(metrics: list[str], classifier, fid_weights, device, progress_note=print) -> tuple[list, dict]:
    """The domain space and the requested others; spaces that cannot run here come back as {name: reason}."""
    spaces, unavailable = [domain_space(classifier, device)], {}
    for name in metrics:
        try:
            if name == "frd":
                spaces.append(RadiomicsSpace())
            elif name == "fid":
                spaces.append(inception_space(fid_weights, device=device))
        except FeatureUnavailable as exc:
            unavailable[name] = str(exc)
            progress_note(f"{name}: unavailable ({exc})")
    return spaces, unavailable


def checked_classifier(classifier_dir, dataset: str, size: int, device):
    """The evaluation classifier of ``classifier_dir`` and its metadata, refused if made for other data."""
    classifier, meta = load_classifier(classifier_dir, device)
    if meta.get("dataset") != dataset or meta.get("size") != size:
        raise MedpfgmError(f"classifier '{classifier_dir}' was trained on {meta.get('dataset')} {meta.get('size')}px, not {dataset} {size}px")
    return classifier, meta


def build_evaluator(train: Split, test: Split, counts, metrics, classifier_dir, fid_weights, repeats, seed, device, progress_note=print):
    """An Evaluator with the requested spaces; unavailable spaces are returned as {name: reason}."""
    classifier, meta = checked_classifier(classifier_dir, train.dataset, train.size, device)
    spaces, unavailable = build_spaces(metrics, classifier, fid_weights, device, progress_note)
    evaluator = Evaluator(train, test, spaces, counts, classifier, repeats, seed)
    return evaluator, unavailable, meta


def write_full_reference(out: Path, subject: dict, fake: ImageSet, spaces: list, train: Split, test: Split, unavailable: dict, seed: int) -> dict:
    """The large-n evaluation (``full_reference_score``) of ``fake`` written to ``out``; returns the record."""
    record = {
        "subject": subject,
        "setup": {"dataset": train.dataset, "size": train.size, "protocol": "whole training split as reference", "seed": seed,
                  "machine": machine(), "weights": weights_provenance(spaces)},
        "unavailable": unavailable,
        **full_reference_score(spaces, train, test, fake, seed),
    }  # fmt: skip
    write_json(out, record)
    return record


def run_samples(run, counts: np.ndarray, solver: str, steps: int, rtol: float, atol: float, batch_size: int, seed: int, device, progress: bool, variant=None) -> tuple[ImageSet, dict]:
    """Samples of a loaded run with the given per-class counts, cached in <run>/samples/ with their NFE and time."""
    from medpfgm.sample import Variant, generate, partial_path

    variant = variant or Variant()
    setting = f"{solver}{'' if solver == 'rk45' else steps}" + (f"_rtol{rtol:g}" if solver == "rk45" else "")
    path = run.paths.samples / f"eval_step{run.step}{variant.sample_tag}_{setting}_n{int(counts.sum())}_seed{seed}.npz"
    labels = np.repeat(np.arange(len(counts)), counts)
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as f:
                if np.array_equal(f["labels"], labels):
                    return ImageSet(f["images"], f["labels"], path.stem), {"nfe": float(f["nfe"].mean()), "seconds": float(f["seconds"]), "samples": str(path)}
        except (KeyError, *NPZ_ERRORS):  # a damaged cached file is sampled again
            pass
    images, nfes, seconds = generate(run, labels, solver, steps, rtol, atol, batch_size, seed, device, progress, resume=partial_path(path), variant=variant)
    if images is None:  # a helper rank under torchrun: rank 0 holds and keeps the samples
        return None, {}
    save_images_npz(path, images, labels, nfe=np.asarray(nfes), seconds=np.asarray(seconds))
    return ImageSet(images, labels, path.stem), {"nfe": float(np.mean(nfes)), "seconds": seconds, "samples": str(path)}


def memorization_record(fake: ImageSet, train: Split, test: Split, evaluator: Evaluator, grid_dir: Path, stem: str) -> dict:
    """The memorization audit of ``fake`` against the whole training split (pixels and the domain space),
    with its closest pairs drawn to ``grid_dir/<stem>_pairs.png``."""
    domain = next(s for s in evaluator.spaces if s.name == "domain")
    result = audit_with_pairs(fake.images, fake.labels, train.images, test.images, train.num_classes, domain, grid_dir / f"{stem}_pairs.png", stem)
    result["figure"] = os.path.relpath(grid_dir / result["figure"], grid_dir.parent)
    return result


def audit_with_pairs(fake_images: np.ndarray, fake_labels: np.ndarray, train_images: np.ndarray, test_images: np.ndarray,
                     num_classes: int, domain, figure: Path, title: str) -> dict:  # fmt: skip
    """``memorization.audit`` of uint8 images (n, H, W, C) in pixels and ``domain``'s feature space, with the
    closest pairs drawn to ``figure`` (recorded by file name) and the set sizes."""
    from medpfgm.evaluate.memorization import audit, pairs_figure

    result = audit(fake_images, fake_labels, train_images, test_images, num_classes, lambda images: cached_features(domain, images))
    pairs_figure(fake_images, train_images, result["pairs"], figure, f"{title}: closest synthetic / training pairs (pixel distance)")
    return {**result, "figure": Path(figure).name, "n_fake": int(len(fake_images)), "n_train": int(len(train_images)), "n_test": int(len(test_images))}


def write_evaluation(out: Path, grid_dir: Path, subject: dict, fake: ImageSet, evaluator: Evaluator, unavailable: dict, classifier_meta: dict,
                     dataset: str, size: int, memorization: tuple[Split, Split] | None = None) -> dict:  # fmt: skip
    """Score ``fake``, write its JSON and its per-class grid; returns the record. Spaces that ``out``
    already holds for the same samples and setup, and that were not asked for now, are kept. With
    ``memorization`` (the train and test splits) the memorization audit is added."""
    names = class_names(dataset)
    grid = evaluation_grid(fake.images, fake.labels, names, grid_dir / f"{out.stem}.png", subject)
    record = {
        "subject": {**subject, "grid": os.path.relpath(grid, grid_dir.parent)},
        "setup": {
            "dataset": dataset,
            "size": size,
            "counts": evaluator.counts.tolist(),
            "repeats": evaluator.repeats,
            "seed": evaluator.seed,
            "classifier": {"sha256": classifier_meta["sha256"], "test_accuracy": classifier_meta["test"]["accuracy"]},
            "machine": machine(),
            "weights": weights_provenance(evaluator.spaces),
        },
        "unavailable": unavailable,
        "score": evaluator.score(fake),
        "floor": evaluator.floor(),
    }
    if memorization is not None:
        record["memorization"] = memorization_record(fake, *memorization, evaluator, grid_dir, out.stem)
    record = keep_previous_spaces(out, record)
    write_json(out, record)
    return record


def weights_provenance(spaces: list) -> dict:
    """{space: where its network's weights came from (file, format, SHA-256)} for spaces that record it (FID)."""
    return {s.name: s.provenance for s in spaces if s.provenance}


def read_previous(out: Path, keys: tuple[str, ...], record: dict) -> dict | None:
    """The result already in ``out`` if it was made with the same setup ``keys`` as ``record``, else None."""
    try:
        previous = json.loads(out.read_text()) if out.is_file() else None
    except ValueError:
        return None
    if not isinstance(previous, dict) or any(previous.get("setup", {}).get(k) != record["setup"].get(k) for k in keys):
        return None
    return previous


def keep_previous_spaces(out: Path, record: dict) -> dict:
    """``record`` plus the feature spaces that ``out`` holds for the same samples and setup and that were
    not computed now (with their weights' provenance): adding FID to an evaluation never drops its FRD.
    The samples' timing and the machine that timed them are kept too, since the samples come from there."""
    previous = read_previous(out, ("dataset", "size", "counts", "repeats", "seed", "classifier"), record)
    if previous is None or previous["subject"].get("samples") != record["subject"].get("samples"):
        return record
    for key in ("seconds_per_image", "cpu_load_per_core"):  # the samples and their timing come from that sitting
        if key in previous["subject"]:
            record["subject"][key] = previous["subject"][key]
    record["setup"]["machine"] = previous["setup"].get("machine", record["setup"]["machine"])
    for space, scores in previous["score"].items():
        if isinstance(scores, dict) and "fd" in scores and space not in record["score"]:
            record["score"][space], record["floor"][space] = scores, previous["floor"][space]
            if space in previous["setup"].get("weights", {}):
                record["setup"]["weights"][space] = previous["setup"]["weights"][space]
    for space, reason in previous.get("unavailable", {}).items():
        if space not in record["score"]:
            record["unavailable"].setdefault(space, reason)
    if "memorization" in previous and "memorization" not in record:
        record["memorization"] = previous["memorization"]
    return record


def full_reference_line(record: dict) -> str:
    """One line of a large-n record: each space's distance with its floor and the image counts."""
    parts = []
    for space, floor in record["floor"].items():
        text = f"{space} {record['score'][space]:.4g} at n {record['n']} (floor {floor:.4g} at n {record['n_floor']}"
        at_floor_n = record["score"].get(f"{space}_at_floor_n")
        parts.append(text + (f"; {at_floor_n:.4g} at n {record['n_floor']})" if at_floor_n is not None else ")"))
    return ", ".join(parts) + f", reference: {record['n_reference']} training images"


def load_samples_file(path: str | Path, dataset: str) -> ImageSet:
    """A MedMNIST-layout samples file (``images``, ``labels``) as written by ``synthesize``."""
    path = Path(path)
    if not path.is_file():
        raise MedpfgmError(f"samples file '{path}' does not exist")
    images, labels, _ = read_image_file(path, "test")  # a MedMNIST-layout file: its test split
    k = len(class_names(dataset))
    if labels.min() < 0 or labels.max() >= k:
        raise MedpfgmError(f"samples file '{path}' has labels outside 0..{k - 1} of {dataset}")
    return ImageSet(images, labels, path.stem)


def run_setting(run, solver: str | None, steps: int | None, rtol: float | None, variant=None) -> tuple[str, int, float, str, str]:
    """A run's sampler setting with the recipe's defaults filled in: solver, steps, rtol, its name
    ("heun 18", "rk45 rtol 0.001") and the result file's stem ("pfgm_heun18"; a sampler variant is
    scored as a model of its own: "pfgmpp_d128_proj_euler10")."""
    from medpfgm.sample import Variant, check_solver, check_variant

    sc = run.cfg.sample
    solver = check_solver(run, solver or sc.solver)
    variant = check_variant(run.cfg, solver, variant or Variant())
    steps, rtol = steps or sc.steps, rtol or sc.rtol
    setting = f"rk45 rtol {rtol:g}" if solver == "rk45" else f"{solver} {steps}"
    return solver, steps, rtol, setting, f"{run.cfg.model_name(variant)}_{setting.replace(' ', '')}"


def refuse_other_run(out: Path, run_dir) -> None:
    """One-line error if ``out`` holds the evaluation of another run (same label and setting, e.g. a
    model trained on a long-tailed set): it would be overwritten."""
    if not out.is_file():
        return
    try:
        previous = json.loads(out.read_text())["subject"]["run"]
    except (ValueError, KeyError, TypeError):
        return
    if Path(previous).resolve() != Path(run_dir).resolve():
        raise MedpfgmError(f"'{out}' holds the evaluation of run '{previous}', not '{run_dir}'; pass --out FILE or --reports DIR to keep both")


def run_subject(run, run_dir, counts, solver, steps, rtol, batch_size, seed, device, progress, variant=None) -> tuple[ImageSet, dict, str]:
    """Samples of a run at one solver setting (and sampler variant), the subject record, and the result file's stem."""
    from medpfgm.sample import Variant

    variant = variant or Variant()
    solver, steps, rtol, setting, stem = run_setting(run, solver, steps, rtol, variant)
    load = os.getloadavg()[0] / (os.cpu_count() or 1)  # timings below are only comparable on a quiet machine
    fake, info = run_samples(run, counts, solver, steps, rtol, rtol, batch_size or run.cfg.sample.batch_size, seed, device, progress, variant)
    if fake is None:
        return None, None, stem
    rk45 = solver == "rk45"
    subject = {
        "label": run.cfg.model_name(variant), "method": run.cfg.method, "guidance": variant.guidance, "project": variant.project, "precision": variant.precision, "run": str(run_dir), "step": run.step, "solver": solver,
        "steps": None if rk45 else steps, "rtol": rtol if rk45 else None, "setting": setting, "nfe": info["nfe"],
        "seconds_per_image": info["seconds"] / len(fake.labels), "samples": info["samples"],
        "cpu_load_per_core": round(load, 2),
    }  # fmt: skip
    return fake, subject, stem


def summary_line(record: dict) -> str:
    """One line: each distance with its floor, and class fidelity."""
    s, f = record["score"], record["floor"]
    parts = []
    for space, name in (("domain", "domain FD"), ("frd", "FRD"), ("fid", "FID")):
        if space in s:
            parts.append(f"{name} {s[space]['fd']['mean']:.4g} ± {s[space]['fd']['std']:.2g} (floor {f[space]['fd']['mean']:.4g})")
        elif space in record["unavailable"]:
            parts.append(f"{name} unavailable")
    parts.append(f"class fidelity {s['class_fidelity']['accuracy']:.3f} (floor {f['class_fidelity']['accuracy']:.3f})")
    if "memorization" in record:
        m = record["memorization"]["pixel"]
        parts.append(f"closer to a training image than 99 % of test images: {m['flagged']:.1%} (pixels)")
    return ", ".join(parts)


def write_ladder(evaluator: Evaluator, source: ImageSet, out: Path, unavailable: dict) -> tuple[Path, list[str]]:
    """Run the ladder, write its JSON (keeping the metrics of spaces that ``out`` holds for the same
    setup and that were not computed now), and return the path and one printable line per metric."""
    from medpfgm.evaluate.ladder import rank_ladder, run_ladder

    result = run_ladder(evaluator, source, evaluator.seed)
    result["setup"] = {"counts": evaluator.counts.tolist(), "repeats": evaluator.repeats, "seed": evaluator.seed, "machine": machine(),
                       "weights": weights_provenance(evaluator.spaces), **evaluator.identity}  # fmt: skip
    result["unavailable"] = unavailable
    previous = read_previous(out, ("dataset", "size", "counts", "repeats", "seed"), result)
    if previous is not None:
        new_metrics = set(result["rungs"]["real"])
        for rung, metrics in previous["rungs"].items():
            for metric, value in metrics.items():
                if rung in result["rungs"] and metric not in new_metrics:
                    result["rungs"][rung][metric] = value
        for space, weights in previous["setup"].get("weights", {}).items():
            result["setup"]["weights"].setdefault(space, weights)
        for space, reason in previous.get("unavailable", {}).items():
            if space not in result["rungs"]["real"]:
                result["unavailable"].setdefault(space, reason)
        result["ranks"], result["failures"] = rank_ladder(result["rungs"])
    lines = []
    for metric, ok in result["ranks"].items():
        values = "  ".join(f"{rung} {scores[metric]['mean']:.4g}" for rung, scores in result["rungs"].items())
        lines.append(f"{metric:16s} {'ranks' if ok else 'FAILS: ' + '; '.join(result['failures'][metric])}  |  {values}")
    return write_json(out, result), lines
