"""Score image sets against real data in several feature spaces, with real-data floors and spreads.

``Evaluator`` holds the real pools of one dataset and size and their features (cached on disk);
``score(images)`` returns every metric as {mean, std} over ``repeats`` reference draws, overall and
per class; ``floor()`` is the same score for a real test subset, so each number has its floor beside it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from medpfgm.classifier import predict_proba
from medpfgm.data import Split
from medpfgm.evaluate.features import FeatureSpace
from medpfgm.evaluate.metrics import kernel_inception_distance, prdc
from medpfgm.evaluate.protocol import ImageSet, draw, max_stratified_n, mean_std, stratified_counts, subsample_indices
from medpfgm.io import atomic_write, cache_dir, state_digest

HIGHER_IS_BETTER = ("precision", "recall", "density", "coverage", "class_fidelity")  # the rest: lower is better
SPACE_ORDER = ("domain", "frd", "fid")  # the order in which spaces draw their references (see Evaluator.score)


def cached_features(space: FeatureSpace, images: np.ndarray, chunk: int = 1000) -> torch.Tensor:
    """Features of real images (n, d), cached on disk by space, network weights and image bytes in
    chunks of ``chunk`` images, so that a killed extraction of a whole split resumes."""
    net = getattr(space, "net", None)
    weights = state_digest(net) if net is not None else "none"
    parts = []
    for start in range(0, len(images), chunk):
        block = images[start : start + chunk]
        path = cache_dir() / "features" / f"{space.name}_{weights}_{hashlib.sha256(block.tobytes()).hexdigest()[:16]}_{len(block)}.pt"
        try:
            parts.append(torch.load(path, weights_only=True))
            continue
        except Exception:  # missing or corrupt: computed again
            pass
        parts.append(space.extract(block))
        atomic_write(path, lambda tmp: torch.save(parts[-1], tmp))
    return torch.cat(parts)


class Evaluator:
    """Real pools of one dataset/size drawn from its train and test splits: ``counts`` per class from test
    for the floor, twice that from train for the reference."""

    def __init__(
        self,
        train: Split,
        test: Split,
        spaces: list[FeatureSpace],
        counts: np.ndarray,
        classifier: torch.nn.Module | None = None,
        repeats: int = 5,
        seed: int = 0,
        use_cache: bool = True,
    ):
        self.spaces, self.counts, self.classifier = spaces, np.asarray(counts), classifier
        self.identity = {"dataset": train.dataset, "size": train.size}
        self.repeats, self.seed, self.use_cache = repeats, seed, use_cache
        rng = np.random.default_rng(seed)
        self.train_pool = draw(train, np.minimum(2 * self.counts, train.class_counts()), rng, "train")
        self.test_pool = draw(test, self.counts, rng, "test")
        self.num_classes = train.num_classes
        self.pool_features = {s.name: (self._features(s, self.train_pool), self._features(s, self.test_pool)) for s in spaces}

    def _features(self, space: FeatureSpace, images: ImageSet) -> torch.Tensor:
        return cached_features(space, images.images) if self.use_cache else space.extract(images.images)

    def floor(self) -> dict:
        """The score of real test images (the best a generator could hope for at this size)."""
        return self.score(self.test_pool, _features={s.name: self.pool_features[s.name][1] for s in self.spaces})

    def score(self, fake: ImageSet, _features: dict | None = None) -> dict:
        """Every metric of ``fake`` as {"mean", "std"} over repeats; per-class lists too.

        Each known space draws its ``repeats`` references from one seeded stream in ``SPACE_ORDER``,
        whether or not it is evaluated, so a space's numbers do not depend on which others were asked
        for: FID added later to an evaluation equals the FID of a run that asked for every space.
        """
        counts = fake.counts(self.num_classes)
        rng = np.random.default_rng(self.seed + 1)
        present = {s.name: s for s in self.spaces}
        out: dict = {"n": int(len(fake.labels)), "counts": counts.tolist()}
        for name in [*SPACE_ORDER, *(n for n in present if n not in SPACE_ORDER)]:
            draws = self._reference_draws(name, counts, rng)
            if name in present:
                fake_f = _features[name] if _features else present[name].extract(fake.images)
                out[name] = self._space_scores(present[name], fake_f, fake.labels, counts, draws)
        if self.classifier is not None:
            out["class_fidelity"] = self._class_fidelity(fake)
        return out

    def _reference_draws(self, space_name: str, counts: np.ndarray, rng) -> list[tuple[np.ndarray, int | None]]:
        """Per repeat: rows of the train pool with ``counts`` per class, and (domain space) KID's seed."""
        draws = []
        for _ in range(self.repeats):
            idx = subsample_indices(self.train_pool.labels, counts, rng)
            draws.append((idx, int(rng.integers(1 << 31)) if space_name == "domain" else None))
        return draws

    def _space_scores(self, space: FeatureSpace, fake_f: torch.Tensor, fake_labels: np.ndarray, counts: np.ndarray, draws) -> dict:
        train_f = self.pool_features[space.name][0]
        classes = [c for c in range(self.num_classes) if counts[c] >= 2]
        overall, per_class, extra = [], {c: [] for c in classes}, []
        for idx, kid_seed in draws:
            ref_f, ref_labels = train_f[torch.from_numpy(idx)], self.train_pool.labels[idx]
            overall.append(space.distance(ref_f, fake_f))
            for c in classes:
                per_class[c].append(space.distance(ref_f[torch.from_numpy(ref_labels == c)], fake_f[torch.from_numpy(fake_labels == c)]))
            if kid_seed is not None:
                kid, _ = kernel_inception_distance(ref_f, fake_f, subsets=10, subset_size=min(100, len(fake_f)), seed=kid_seed)
                extra.append({"kid": kid, **prdc(ref_f, fake_f)})
        scores = {"fd": mean_std(overall), "fd_per_class": {str(c): mean_std(v) for c, v in per_class.items()}}
        featureless = int((~torch.isfinite(fake_f).all(1)).sum())
        if featureless:  # images the space could not describe, left out of its distances
            scores["featureless"] = featureless
        scores["fd_class_mean"] = mean_std([float(np.mean([per_class[c][r] for c in classes])) for r in range(self.repeats)])
        for key in extra[0] if extra else []:
            scores[key] = mean_std([e[key] for e in extra])
        return scores

    def _class_fidelity(self, fake: ImageSet) -> dict:
        """The classifier's accuracy on ``fake`` (its labels are the requested classes), overall and per class."""
        pred = predict_proba(self.classifier, fake.images).argmax(1)
        hit = pred == fake.labels
        per_class = {str(c): float(hit[fake.labels == c].mean()) for c in range(self.num_classes) if (fake.labels == c).any()}
        return {"accuracy": float(hit.mean()), "per_class": per_class}


def full_reference_score(spaces: list[FeatureSpace], train: Split, test: Split, fake: ImageSet, seed: int = 0) -> dict:
    """The large-n protocol: each space's Fréchet distance of ``fake`` to the whole training split, and
    the floor, the same distance for real test images: as many as ``fake`` has in its class proportions
    where the test split holds them, else all of it. Where the floor has fewer images than ``fake``, the
    distance of a class-stratified subset of ``fake`` of the floor's size is given too ("at_floor_n"),
    since Fréchet distances fall as n grows. One number each (the reference is the whole split).
    """
    counts = fake.counts(train.num_classes)
    rng = np.random.default_rng(seed)
    if max_stratified_n(test.class_counts(), counts) >= len(fake.labels):
        floor_set = draw(test, counts, rng, "test")
    else:
        floor_set = ImageSet(test.images, test.labels, "test")
    smaller = len(floor_set.labels) < len(fake.labels)
    subset = torch.from_numpy(subsample_indices(fake.labels, stratified_counts(counts, len(floor_set.labels)), rng)) if smaller else None
    out = {"n": len(fake.labels), "n_reference": len(train.labels), "n_floor": len(floor_set.labels), "score": {}, "floor": {}}
    for space in spaces:
        ref = cached_features(space, train.images)
        fake_f = space.extract(fake.images)
        out["score"][space.name] = space.distance(ref, fake_f)
        out["floor"][space.name] = space.distance(ref, cached_features(space, floor_set.images))
        if subset is not None:
            out["score"][f"{space.name}_at_floor_n"] = space.distance(ref, fake_f[subset])
    return out


def summarize(score: dict) -> dict[str, dict[str, float]]:
    """Flat {metric: {mean, std}} of a score: the numbers tables and the ladder use.

    Each feature space gives its Fréchet distance ("domain_fd", "frd", "fid", ...) and the mean of its
    per-class distances ("..._class"); the domain space adds KID and PRDC.
    """
    flat = {}
    for space, scores in score.items():
        if isinstance(scores, dict) and "fd" in scores:
            name = "domain_fd" if space == "domain" else space
            flat[name], flat[f"{name}_class"] = scores["fd"], scores["fd_class_mean"]
    for key in ("kid", "precision", "recall", "density", "coverage"):
        if key in score.get("domain", {}):
            flat[key] = score["domain"][key]
    if "class_fidelity" in score:
        flat["class_fidelity"] = {"mean": score["class_fidelity"]["accuracy"], "std": 0.0}
    return flat


def is_class_aware(metric: str) -> bool:
    """Metrics that compare class by class, so a class-swapped set must score worse."""
    return metric.endswith("_class") or metric == "class_fidelity"


def better(metric: str, a: float, b: float) -> bool:
    """Whether value ``a`` of ``metric`` is strictly better than ``b``."""
    return a > b if metric in HIGHER_IS_BETTER else a < b
