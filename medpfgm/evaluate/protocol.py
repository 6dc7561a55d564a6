"""The evaluation protocol: which real images a synthetic set is compared with, and how spreads are made.

A set of n images is always compared at matched class composition: the reference is drawn from the
real training split with the same per-class counts, the floor compares a real test subset with the
same counts against such a reference. Features of a fixed pool (twice the counts from train, the
counts from test, capped by what the split has) are extracted once; each of ``repeats`` repetitions
draws a fresh reference from the pool, so every number has a mean and a standard deviation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from medpfgm.data import Split
from medpfgm.errors import MedpfgmError


@dataclass
class ImageSet:
    """uint8 images (n, H, W, C) with int labels (n,)."""

    images: np.ndarray
    labels: np.ndarray
    name: str = ""

    def counts(self, num_classes: int) -> np.ndarray:
        return np.bincount(self.labels, minlength=num_classes)


def stratified_counts(proportions: np.ndarray, n: int) -> np.ndarray:
    """Integer per-class counts summing to n, as close to n * proportions as possible (largest remainder)."""
    raw = np.asarray(proportions, float) / np.sum(proportions) * n
    counts = np.floor(raw).astype(int)
    counts[np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]] += 1
    return counts


def max_stratified_n(split_counts: np.ndarray, proportions: np.ndarray) -> int:
    """Largest n whose stratified counts fit in a split holding ``split_counts`` per class."""
    p = np.asarray(proportions, float) / np.sum(proportions)
    n = int(np.floor(np.min(np.where(p > 0, split_counts / np.maximum(p, 1e-12), np.inf)))) + len(p)  # rounding may allow a few more
    while n > 0 and np.any(stratified_counts(p, n) > split_counts):
        n -= 1
    return n


def draw(split: Split | ImageSet, counts: np.ndarray, rng: np.random.Generator, name: str = "") -> ImageSet:
    """``counts[c]`` images of each class c, without replacement."""
    picks = []
    for c, k in enumerate(counts):
        pool = np.flatnonzero(split.labels == c)
        if k > len(pool):
            raise MedpfgmError(f"class {c} has {len(pool)} images in {getattr(split, 'name', 'the set')}, {k} are needed; lower -n")
        picks.append(rng.choice(pool, size=int(k), replace=False))
    idx = np.sort(np.concatenate(picks)) if picks else np.zeros(0, int)
    return ImageSet(split.images[idx], split.labels[idx], name or getattr(split, "name", ""))


def subsample_indices(labels: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sorted row indices of a labelled pool with ``counts[c]`` rows of class c, drawn without replacement."""
    return np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), size=int(k), replace=False) for c, k in enumerate(counts)]))


def mean_std(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, float)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0}
