"""The validity ladder: a metric must score real < known degradations < pure noise at the report's size.

Rungs are made from the evaluator's real test subset (so the "real" rung is the floor): Gaussian blur,
additive Gaussian noise, a hue rotation (an intensity shift for grayscale data), a class swap (each
class shown with another class's real images: only class-aware metrics can see it) and uniform noise.
"""

from __future__ import annotations

import numpy as np
import torch
import torchvision.transforms.functional as TF
from monai.transforms import GaussianSmooth

from medpfgm.evaluate.evaluate import Evaluator, better, is_class_aware, summarize
from medpfgm.evaluate.protocol import ImageSet

BLUR_SIGMA = 1.0  # px
NOISE_STD = 0.08  # of the [0, 1] range
HUE_SHIFT = 0.15  # of a full turn
DEGRADATIONS = ("blur", "noise", "hue", "class_swap")


def _to_float(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def blur(images: np.ndarray, sigma: float = BLUR_SIGMA) -> np.ndarray:
    """Gaussian blur of every channel (MONAI GaussianSmooth over H, W)."""
    x = _to_float(images)
    n, c, h, w = x.shape
    return _to_uint8(GaussianSmooth(sigma=sigma)(x.reshape(n * c, h, w)).reshape(n, c, h, w))


def add_noise(images: np.ndarray, rng: np.random.Generator, std: float = NOISE_STD) -> np.ndarray:
    x = _to_float(images)
    return _to_uint8(x + torch.from_numpy(rng.normal(0.0, std, x.shape)).float())


def shift_hue(images: np.ndarray, shift: float = HUE_SHIFT) -> np.ndarray:
    """Rotate the hue of RGB images; grayscale images get the same amount added to their intensity."""
    x = _to_float(images)
    return _to_uint8(TF.adjust_hue(x, shift) if x.shape[1] == 3 else x + shift)


def class_swap(real: ImageSet, source: ImageSet, num_classes: int, rng: np.random.Generator) -> ImageSet:
    """Class c's slots filled with real images of class c + 1 (mod K) from ``source``, labels kept."""
    images = real.images.copy()
    for c in range(num_classes):
        slots = np.flatnonzero(real.labels == c)
        pool = np.flatnonzero(source.labels == (c + 1) % num_classes)
        if len(slots) and len(pool):
            images[slots] = source.images[rng.choice(pool, size=len(slots), replace=len(pool) < len(slots))]
    return ImageSet(images, real.labels, "class_swap")


def ladder_sets(real: ImageSet, source: ImageSet, num_classes: int, seed: int = 0) -> dict[str, ImageSet]:
    """The rungs above 'real', each an ImageSet with the real set's labels."""
    rng = np.random.default_rng(seed)
    return {
        "blur": ImageSet(blur(real.images), real.labels, "blur"),
        "noise": ImageSet(add_noise(real.images, rng), real.labels, "noise"),
        "hue": ImageSet(shift_hue(real.images), real.labels, "hue"),
        "class_swap": class_swap(real, source, num_classes, rng),
        "pure_noise": ImageSet(rng.integers(0, 256, real.images.shape, dtype=np.uint8), real.labels, "pure_noise"),
    }


def rank_ladder(rungs: dict[str, dict[str, dict]]) -> tuple[dict[str, bool], dict[str, list[str]]]:
    """Whether each metric ranks the ladder, and the reasons where it does not.

    real must beat every degradation; blur, noise and hue must also beat pure noise. The class swap is
    a degradation for class-aware metrics only, and it is not compared with noise: for class fidelity a
    swapped set is rightly worse than noise (every image is confidently of another class).
    """
    ranks, failures = {}, {}
    for metric in rungs["real"]:
        value = {rung: scores[metric]["mean"] for rung, scores in rungs.items()}
        degradations = [d for d in DEGRADATIONS if d != "class_swap" or is_class_aware(metric)]
        problems = [f"real does not beat {d}" for d in degradations if not better(metric, value["real"], value[d])]
        problems += [f"{d} does not beat pure noise" for d in degradations if d != "class_swap" and not better(metric, value[d], value["pure_noise"])]
        ranks[metric], failures[metric] = not problems, problems
    return ranks, failures


def run_ladder(evaluator: Evaluator, source: ImageSet, seed: int = 0) -> dict:
    """Scores of every rung and, per metric, whether it ranks the ladder.

    Returns {"rungs": {rung: {metric: {mean, std}}}, "ranks": {metric: bool}, "failures": {metric: [reasons]}}.
    """
    rungs = {"real": summarize(evaluator.floor())}
    for name, images in ladder_sets(evaluator.test_pool, source, evaluator.num_classes, seed).items():
        rungs[name] = summarize(evaluator.score(images))
    ranks, failures = rank_ladder(rungs)
    return {"rungs": rungs, "ranks": ranks, "failures": failures}
