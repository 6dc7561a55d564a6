"""Long-tailed training sets and their class-balanced synthetic fill, both as MedMNIST-layout files.

A derived file keeps the official layout (``{train,val,test}_{images,labels}``, labels (n, 1)) so the
project's loaders and any medmnist-style code read it; a long-tailed set sits in its own folder under the
official name (``bloodmnist.npz``) so ``--data-root FOLDER`` points any command at it, and a sidecar
``<name>.provenance.json`` records its MD5 (checked instead of the official one) and how it was made.
An augmented file adds ``train_synthetic`` (bool, n): which training images are synthetic.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from medpfgm.data import NPZ_ERRORS, Split, data_file, md5sum, provenance_path
from medpfgm.errors import MedpfgmError
from medpfgm.io import atomic_write, write_json
from medpfgm.run import RunPaths, other_training_data


def long_tailed_counts(class_counts: np.ndarray, ratio: float) -> np.ndarray:
    """Exponential profile (as CIFAR-10-LT): the i-th largest class keeps n_max · ratio^(-i / (K - 1)).

    Classes keep their natural order of size (the largest stays the head); no class gets more
    images than it has. ``ratio`` = 1 keeps min(n_max, count) of each.
    """
    if ratio < 1:
        raise MedpfgmError(f"imbalance ratio must be >= 1, got {ratio:g}")
    counts = np.asarray(class_counts)
    k = len(counts)
    order = np.argsort(-counts, kind="stable")
    out = np.zeros(k, dtype=int)
    for rank, c in enumerate(order):
        out[c] = min(int(counts[c]), max(1, int(counts.max() * ratio ** (-rank / max(k - 1, 1)))))
    return out


def fill_counts(class_counts: np.ndarray, target: str | int) -> np.ndarray:
    """Synthetic images each class needs to reach ``target`` ("balanced" = the largest class; or an int)."""
    counts = np.asarray(class_counts)
    if target == "balanced":
        goal = int(counts.max())
    else:
        try:
            goal = int(target)
        except ValueError:
            raise MedpfgmError(f"--target must be 'balanced' or a positive integer, got '{target}'") from None
        if goal <= 0:
            raise MedpfgmError(f"--target must be 'balanced' or a positive integer, got '{target}'")
    return np.maximum(goal - counts, 0)


def fraction_of_gap(missing: np.ndarray, fraction: float) -> np.ndarray:
    """Each class's share ``fraction`` (0 < f <= 1) of its gap, rounded down: a partial fill."""
    if not 0 < fraction <= 1:
        raise MedpfgmError(f"--fill-fraction must lie in (0, 1], got {fraction:g}")
    return np.floor(np.asarray(missing) * fraction + 1e-9).astype(int)


def confident(probs: np.ndarray, labels: np.ndarray, min_confidence: float) -> np.ndarray:
    """Mask (n,) of images the classifier gives their intended class with probability >= ``min_confidence``.

    probs: (n, K) class probabilities; labels: (n,) the classes the images were drawn for."""
    return probs[np.arange(len(labels)), labels] >= min_confidence


def check_filter_classifier(meta: dict, split: Split) -> None:
    """The filter's classifier must have been trained on the real set being filled (its class counts), never on
    the full set or the test split: otherwise it knows what the long tail hides."""
    counts = meta.get("train_counts")
    if counts != split.class_counts().tolist() or "synthetic" in str(meta.get("trained_on", "")):
        raise MedpfgmError(
            f"--filter classifier was trained on class counts {counts} ({meta.get('trained_on')}), not on this training set "
            f"({split.class_counts().tolist()}); train it with `medpfgm classify --train-file` on the set to fill"
        )


FILTER_ROUNDS = 5  # a filtered fill draws at most this many times (each round asks for what is still missing, twice over)
MIN_KEEP_RATE = 0.05  # a class kept less often than this is not drawn again: four more rounds would fill under half its gap


def round_file(out: Path, r: int) -> Path:
    """The draws of a filtered fill's round ``r`` (a resume file of ``generate``, kept until the fill is written)."""
    from medpfgm.sample import partial_path

    return partial_path(out.with_name(f"{out.stem}.round{r}.npz"))


def fill_draw_files(out: Path) -> list[Path]:
    """Every samples file a fill bound for ``out`` draws into, to be removed once the fill is written."""
    from medpfgm.sample import partial_path

    return [partial_path(out), *(round_file(out, r) for r in range(FILTER_ROUNDS))]


def filtered_fill(draw, classifier, missing: np.ndarray, min_confidence: float, seed: int, out: Path):
    """Draw, keep what ``classifier`` is confident of, draw again for the rest, up to FILTER_ROUNDS rounds; a class
    whose round kept under MIN_KEEP_RATE of its draws is not drawn again.

    ``draw(labels, seed, resume_path)`` returns uint8 images (n, H, W, C) for ``labels`` (and keeps them in
    ``resume_path`` until the fill is written, so a killed fill goes on from its last finished round). Returns
    (images, labels, {"drawn": per class, "kept": per class}); a class can stay short when its images are rarely
    confident (the provenance says how short). One process.
    """
    from medpfgm.classifier import predict_proba

    need, kept_images, kept_labels = missing.copy(), [], []
    drawn, given_up = np.zeros_like(missing), np.zeros(len(missing), bool)
    for r in range(FILTER_ROUNDS):
        asked = np.where(given_up, 0, 2 * need)  # twice what is missing: most rounds finish at once
        if asked.sum() == 0:
            break
        ask = np.repeat(np.arange(len(need)), asked)
        images = draw(ask, seed + 1_000 * r, round_file(out, r))
        drawn += asked
        ok = confident(predict_proba(classifier, images), ask, min_confidence)
        for c in np.flatnonzero(asked):
            hits = np.flatnonzero(ok & (ask == c))
            kept_images.append(images[hits[: need[c]]])
            kept_labels.append(ask[hits[: need[c]]])
            need[c] -= min(len(hits), need[c])
            given_up[c] = len(hits) < MIN_KEEP_RATE * asked[c]
    labels = np.concatenate(kept_labels).astype(np.int64) if kept_labels else np.zeros(0, np.int64)
    images = np.concatenate(kept_images) if kept_images else np.zeros((0, *images.shape[1:]), np.uint8)
    kept = np.bincount(labels, minlength=len(missing))
    return images, labels, {"drawn": drawn.tolist(), "kept": kept.tolist()}


def _read_all(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as npz:
            return {key: npz[key] for key in npz.files}
    except NPZ_ERRORS as exc:
        raise MedpfgmError(f"data file '{path}' cannot be read ({exc})") from None


def write_derived(path: str | Path, dataset: str, size: int, arrays: dict[str, np.ndarray], provenance: dict) -> Path:
    """Write a MedMNIST-layout file with its provenance sidecar (its MD5, dataset, size and how it was made)."""
    path = Path(path)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)

    atomic_write(path, write)
    write_json(provenance_path(path), {**provenance, "dataset": dataset, "size": size, "md5": md5sum(path)})
    return path


def make_long_tailed(source: Path, dataset: str, size: int, ratio: float, seed: int, out_dir: str | Path) -> Path:
    """A long-tailed copy of ``source``: the training split cut to the exponential profile, val/test kept.

    The kept training indices (into the source's training split) are stored as ``train_source_index``.
    """
    arrays = _read_all(source)
    labels = arrays["train_labels"].reshape(-1).astype(np.int64)
    keep_counts = long_tailed_counts(np.bincount(labels), ratio)
    rng = np.random.default_rng(seed)
    keep = np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), k, replace=False) for c, k in enumerate(keep_counts)]))
    arrays.update(train_images=arrays["train_images"][keep], train_labels=arrays["train_labels"][keep], train_source_index=keep)
    provenance = {"made_by": "medpfgm longtail", "source_md5": md5sum(source), "imbalance_ratio": ratio, "seed": seed, "train_counts": keep_counts.tolist()}
    return write_derived(data_file(dataset, size, Path(out_dir)), dataset, size, arrays, provenance)


def write_augmented(source: Path, dataset: str, size: int, synthetic: np.ndarray, synthetic_labels: np.ndarray, out: str | Path, provenance: dict) -> Path:
    """``source`` with synthetic images appended to its training split and marked in ``train_synthetic``."""
    arrays = _read_all(source)
    real_labels = arrays["train_labels"]
    labels = synthetic_labels.astype(real_labels.dtype).reshape(-1, *real_labels.shape[1:])
    images = synthetic.reshape(-1, *arrays["train_images"].shape[1:])
    arrays.update(
        train_images=np.concatenate([arrays["train_images"], images]),
        train_labels=np.concatenate([real_labels, labels]),
        train_synthetic=np.concatenate([np.zeros(len(real_labels), bool), np.ones(len(labels), bool)]),
    )
    counts = np.bincount(arrays["train_labels"].reshape(-1).astype(np.int64))
    return write_derived(out, dataset, size, arrays, {**provenance, "source_md5": md5sum(source), "train_counts": counts.tolist(), "synthetic": int(len(labels))})


def read_provenance(path: Path) -> dict | None:
    side = provenance_path(path)
    if not side.is_file():
        return None
    try:
        return json.loads(side.read_text())
    except ValueError as exc:
        raise MedpfgmError(f"provenance file '{side}' is corrupt ({exc})") from None


def read_training_file(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training images, labels and synthetic mask (all False for real-only files) of a MedMNIST-layout file.

    A file with a provenance sidecar must still have the MD5 recorded there.
    """
    from medpfgm.data import read_image_file

    path = Path(path)
    if not path.is_file():
        raise MedpfgmError(f"training file '{path}' does not exist")
    provenance = read_provenance(path)
    if provenance is not None and md5sum(path) != provenance.get("md5"):
        raise MedpfgmError(f"training file '{path}' does not match the MD5 in {provenance_path(path).name}: changed or corrupt")
    return read_image_file(path, "train")


def check_trained_on(run_dir: str | Path, split: Split) -> str | None:
    """Refuse to fill ``split`` with a run trained on other images (e.g. the full set, not its long tail).

    Runs record their training split in ``data.json``; for an older run without it, returns a warning.
    """
    paths = RunPaths(Path(run_dir))
    if not paths.data.is_file():
        return f"warning: run '{run_dir}' has no data.json; cannot check which images it was trained on"
    mismatch = other_training_data(paths, split)
    if mismatch:
        raise MedpfgmError(f"{mismatch}: train the fill model on the set it fills")
    return None
