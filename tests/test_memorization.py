"""The memorization audit: nearest-training-image distances against brute force, planted copies found."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medpfgm.data import load_split
from medpfgm.evaluate.memorization import QUANTILE, audit, nearest


def test_nearest_equals_a_float64_brute_force():
    rng = np.random.default_rng(0)
    queries, reference = rng.random((37, 50)), rng.random((300, 50))
    reference[5] = queries[3] + 1e-9  # a near-copy: the distance must not drown in rounding
    dist, index = nearest(torch.from_numpy(queries), torch.from_numpy(reference), chunk=8)
    brute = np.sqrt(((queries[:, None, :] - reference[None, :, :]) ** 2).sum(-1))
    np.testing.assert_allclose(dist.numpy(), brute.min(1), rtol=1e-9, atol=1e-6)
    assert np.array_equal(index.numpy(), brute.argmin(1))


def test_planted_copies_are_flagged_and_drawn(data_root):
    train, test = (load_split("bloodmnist", 28, s, data_root) for s in ("train", "test"))
    train_images, test_images = train.images[:2000], test.images[:400]
    rng = np.random.default_rng(1)
    honest = test.images[400:560]  # real images no model saw: what a generator that does not copy looks like
    planted = rng.choice(len(train_images), 40, replace=False)
    fake = np.concatenate([honest, train_images[planted]])
    labels = np.concatenate([np.zeros(len(honest), int), np.ones(40, int)])  # copies all in class 1
    result = audit(fake, labels, train_images, test_images, num_classes=8)
    pix = result["pixel"]
    assert pix["flagged_per_class"]["1"] == 1.0  # every copy
    assert pix["flagged_per_class"]["0"] < 0.05  # about QUANTILE of the honest ones
    assert pix["flagged"] == pytest.approx((40 + pix["flagged_per_class"]["0"] * 160) / 200)
    assert pix["min_fake_to_train"] == 0.0 and pix["threshold"] > 0
    assert {p[0] for p in result["pairs"]} <= set(range(160, 200)) and all(p[2] == 0 for p in result["pairs"])
    assert all(np.array_equal(fake[p[0]], train_images[p[1]]) for p in result["pairs"])
    assert 0 < QUANTILE < 0.05


def test_evaluate_writes_the_audit_and_its_pairs(capsys, tmp_path, data_root):
    from medpfgm.cli import main
    from medpfgm.io import save_images_npz

    train = load_split("bloodmnist", 28, "train", data_root)
    fake = np.concatenate([train.images[:12], load_split("bloodmnist", 28, "test", data_root).images[:12]])
    labels = np.concatenate([train.labels[:12], np.arange(12) % 8])
    samples = save_images_npz(tmp_path / "copies.npz", fake, labels.astype(np.int64))
    reports = tmp_path / "reports"
    clf = reports / "bloodmnist_28" / "classifier"
    assert main(["classify", "--dataset", "bloodmnist", "--size", "28", "--out", str(clf), "--steps", "2", "--width", "4", "--quiet"]) == 0
    code = main(["evaluate", "--samples", str(samples), "--dataset", "bloodmnist", "--metrics", "domain,memorization", "--repeats", "1", "--reports", str(reports), "--quiet"])
    assert code == 0, capsys.readouterr().err
    record = json.loads((reports / "bloodmnist_28" / "evaluations" / "copies.json").read_text())
    assert record["memorization"]["pixel"]["flagged"] >= 0.5 and "domain" in record["memorization"]
    assert (reports / "bloodmnist_28" / record["memorization"]["figure"]).is_file()
    assert main(["report", "--dataset", "bloodmnist", "--size", "28", "--reports", str(reports)]) == 0
    page = (reports / "bloodmnist_28" / "README.md").read_text()
    assert "## Memorization audit" in page and "copies_pairs.png" in page
