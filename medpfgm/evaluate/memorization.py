"""Does a generator copy its training images? Nearest-training-image distances of synthetic images beside
those of real test images (which the generator never saw), in pixel space and the domain feature space.

A synthetic image counts as *flagged* when it lies closer to a training image than the 1st percentile of
the test-to-train distances: closer than 99 % of unseen real images come. Reported overall and per class
(a class of 23 images is where copying would show first), with the closest pairs drawn side by side.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

QUANTILE = 0.01  # the flag threshold: this quantile of real test-to-train distances
PAIRS = 8  # closest pairs drawn


def nearest(queries: torch.Tensor, reference: torch.Tensor, chunk: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Euclidean distance of each query row to its nearest reference row, and that row's index.

    queries (n, d), reference (m, d): float64 matrix products in chunks of ``chunk`` queries find the
    nearest row (their ||a||² + ||b||² - 2ab rounding, about 1e-7 here, cannot reorder real neighbours);
    its distance is then recomputed from the explicit difference, so a copy is at exactly 0.
    Returns dist (n,) float64, index (n,) int64.
    """
    queries, reference = queries.double(), reference.double()
    index = torch.cat([torch.cdist(queries[s : s + chunk], reference).argmin(1) for s in range(0, len(queries), chunk)])
    return (queries - reference[index]).norm(dim=1), index


def pixels(images: np.ndarray) -> torch.Tensor:
    """uint8 images (n, H, W, C) as rows of values in [0, 1] (n, H*W*C)."""
    return torch.from_numpy(images.reshape(len(images), -1)).double() / 255.0


def audit_space(fake: torch.Tensor, fake_labels: np.ndarray, train: torch.Tensor, test: torch.Tensor, num_classes: int) -> dict:
    """Nearest-train distances of ``fake`` and of ``test`` rows in one space; the flagged fractions."""
    fake_d, fake_i = nearest(fake, train)
    test_d, _ = nearest(test, train)
    threshold = float(torch.quantile(test_d, QUANTILE))
    flagged = (fake_d < threshold).numpy()
    per_class = {str(c): float(flagged[fake_labels == c].mean()) for c in range(num_classes) if (fake_labels == c).any()}
    return {
        "threshold": threshold,
        "flagged": float(flagged.mean()),
        "flagged_per_class": per_class,
        "median_fake_to_train": float(fake_d.median()),
        "median_test_to_train": float(test_d.median()),
        "min_fake_to_train": float(fake_d.min()),
        "min_test_to_train": float(test_d.min()),
        "_distances": fake_d,
        "_index": fake_i,
    }


def audit(fake_images: np.ndarray, fake_labels: np.ndarray, train_images: np.ndarray, test_images: np.ndarray,
          num_classes: int, features: Callable[[np.ndarray], torch.Tensor] | None = None) -> dict:  # fmt: skip
    """The memorization audit in pixel space and (when ``features`` maps images to rows) in a feature space.

    Returns {"pixel": {...}, "domain": {...}, "pairs": [[fake index, train index, pixel distance], ...]}: the
    PAIRS closest (synthetic, training) pairs in pixel space, closest first.
    """
    out = {"pixel": audit_space(pixels(fake_images), fake_labels, pixels(train_images), pixels(test_images), num_classes)}
    if features is not None:
        out["domain"] = audit_space(features(fake_images), fake_labels, features(train_images), features(test_images), num_classes)
    d, i = out["pixel"]["_distances"], out["pixel"]["_index"]
    order = torch.argsort(d)[:PAIRS]
    out["pairs"] = [[int(k), int(i[k]), float(d[k])] for k in order]
    for space in ("pixel", "domain"):
        for key in ("_distances", "_index"):
            out.get(space, {}).pop(key, None)
    return out


def pairs_figure(fake_images: np.ndarray, train_images: np.ndarray, pairs: list, path: str | Path, title: str = "") -> Path:
    """The closest pairs: synthetic above, its nearest training image below, the pixel distance over each."""
    from medpfgm.figures import image_pairs

    return image_pairs([fake_images[p[0]] for p in pairs], [train_images[p[1]] for p in pairs], [f"{p[2]:.2f}" for p in pairs], path, title)
