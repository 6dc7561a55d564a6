"""Long-tailed sets and class-balanced fill: counts, file layout, provenance and the loaders."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest

from medpfgm.augment import fill_counts, long_tailed_counts
from medpfgm.data import load_split, read_npz_split
from medpfgm.errors import MedpfgmError
from medpfgm.machine import machine
from tests.conftest import write_tiny_recipe
from tests.test_cli import assert_one_line_error, run_cli

BLOOD_TRAIN = np.array([852, 2181, 1085, 2026, 849, 993, 2330, 1643])


def test_long_tailed_counts_follow_the_exponential_profile():
    counts = long_tailed_counts(BLOOD_TRAIN, 100)
    order = np.argsort(-BLOOD_TRAIN, kind="stable")
    expected = [int(2330 * 100 ** (-i / 7)) for i in range(8)]
    np.testing.assert_array_equal(counts[order], np.minimum(BLOOD_TRAIN[order], expected))
    assert counts.max() == 2330 and counts.min() == 23  # 2330 / 100, rounded down
    assert np.all(counts <= BLOOD_TRAIN)
    np.testing.assert_array_equal(long_tailed_counts(BLOOD_TRAIN, 1), BLOOD_TRAIN)
    with pytest.raises(MedpfgmError, match="ratio"):
        long_tailed_counts(BLOOD_TRAIN, 0.5)


def test_fill_counts_reach_the_target_and_never_remove():
    counts = np.array([486, 128, 206, 194, 66])
    np.testing.assert_array_equal(fill_counts(counts, "balanced"), [0, 358, 280, 292, 420])
    np.testing.assert_array_equal(fill_counts(counts, "200"), [0, 72, 0, 6, 134])
    for bad in ("-3", "many"):
        with pytest.raises(MedpfgmError, match="balanced' or a positive integer"):
            fill_counts(counts, bad)


def test_longtail_then_augment_round_trip_through_the_loaders(capsys, tmp_path, data_root):
    lt = tmp_path / "lt"
    code, out, err = run_cli(capsys, "longtail", "--dataset", "retinamnist", "--ratio", "10", "--out", str(lt))
    assert code == 0, err
    split = load_split("retinamnist", 28, "train", lt)  # verified against its provenance MD5
    np.testing.assert_array_equal(split.class_counts(), long_tailed_counts(np.array([486, 128, 206, 194, 66]), 10))
    official = load_split("retinamnist", 28, "train", data_root)
    with np.load(lt / "retinamnist.npz") as f:
        np.testing.assert_array_equal(f["train_images"], official.images[f["train_source_index"]])  # real images, untouched
        np.testing.assert_array_equal(f["test_images"], np.load(data_root / "retinamnist.npz")["test_images"])

    run = tmp_path / "run"
    recipe = write_tiny_recipe(tmp_path / "t.toml")
    recipe.write_text(recipe.read_text().replace('dataset = "bloodmnist"', 'dataset = "retinamnist"').replace("steps = 6", "steps = 2"))
    assert run_cli(capsys, "train", "--recipe", str(recipe), "--run", str(run), "--data-root", str(lt), "--quiet", "--device", "cpu")[0] == 0
    out_file = tmp_path / "aug.npz"
    code, out, err = run_cli(capsys, "augment", "--run", str(run), "--target", "60", "--out", str(out_file), "--data-root", str(lt), "--steps", "2", "--quiet", "--device", "cpu")
    assert code == 0, err
    images, labels = read_npz_split(out_file, "train")
    before = split.class_counts()
    np.testing.assert_array_equal(np.bincount(labels), np.maximum(before, 60))
    with np.load(out_file) as f:
        mask = f["train_synthetic"]
        assert f["train_labels"].shape == (len(labels), 1)  # MedMNIST's label layout
        np.testing.assert_array_equal(np.bincount(labels[mask], minlength=5), np.maximum(60 - before, 0))
        np.testing.assert_array_equal(f["train_images"][~mask], split.images)
    code, out, err = run_cli(capsys, "train", "--run", str(run), "--resume", "--steps", "3", "--data-root", str(data_root), "--quiet")
    assert code == 2 and "--resume: run" in err and "was trained on" in err
    code, out, err = run_cli(capsys, "augment", "--run", str(run), "--target", "60", "--out", str(tmp_path / "leak.npz"), "--data-root", str(data_root), "--quiet")
    assert code == 2 and "was trained on" in err and "[" in err and not (tmp_path / "leak.npz").exists()  # the full set is not what it saw
    provenance = json.loads((tmp_path / "aug.npz.provenance.json").read_text())
    assert provenance["filled"] == np.maximum(60 - before, 0).tolist()
    assert 0 < provenance["sampling_seconds"] < 600  # the fill's cost, for the benchmark pages

    for extra in ([], ["--synthetic-only", "--balanced", "--augment", "--reweight"]):
        code, out, err = run_cli(capsys, "classify", "--dataset", "retinamnist", "--train-file", str(out_file), *extra, "--epochs", "1", "--width", "4", "--out", str(tmp_path / "clf"), "--quiet", "--device", "cpu")
        assert code == 0, err
        meta = json.loads((tmp_path / "clf" / "classifier.json").read_text())
        expected = np.bincount(labels[mask] if extra else labels, minlength=5)
        assert meta["train_counts"] == expected.tolist() and "test accuracy" in out
        assert meta["machine"] == machine()  # the benchmark pages say where each classifier was trained
        assert meta["trained_on_md5"] == hashlib.md5(out_file.read_bytes()).hexdigest()  # which draw of a fill it saw


def test_classical_augment_turns_and_jitters_within_range():
    import torch

    from medpfgm.classifier import classical_augment

    x = torch.rand(64, 3, 8, 8) * 2 - 1
    plain = classical_augment(x, torch.Generator().manual_seed(0), jitter=0.0)
    turned = [any(torch.allclose(p, torch.rot90(img, k, dims=(-2, -1)), atol=1e-6) for k in range(4)) for p, img in zip(plain, x)]
    assert all(turned) and not torch.allclose(plain, x)  # quarter turns only, and some images turned
    jittered = classical_augment(x, torch.Generator().manual_seed(0), jitter=0.1)
    assert jittered.min() >= -1 and jittered.max() <= 1
    shift = (jittered - plain).mean(dim=(1, 2, 3)).abs()
    assert shift.max() <= 0.2 + 1e-6 and shift.max() > 0.01


def test_a_changed_derived_file_fails_its_provenance_md5(capsys, tmp_path, data_root):
    lt = tmp_path / "lt"
    assert run_cli(capsys, "longtail", "--dataset", "retinamnist", "--ratio", "10", "--out", str(lt))[0] == 0
    path = lt / "retinamnist.npz"
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(MedpfgmError, match="provenance file"):
        load_split("retinamnist", 28, "train", lt)


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["longtail", "--dataset", "retinamnist", "--ratio", "0.5", "--out", "/tmp/x"], ["--ratio must be at least 1", "0.5"]),
        (["augment", "--run", "/nonexistent", "--out", "/tmp/x.npz"], ["/nonexistent", "does not exist"]),
        (["augment", "--run", "/nonexistent", "--out", "/tmp/x.npz", "--steps", "0"], ["--steps must be a positive integer"]),
        (["classify", "--dataset", "retinamnist", "--out", "/tmp/x", "--synthetic-only"], ["--synthetic-only needs --train-file"]),
        (["classify", "--dataset", "retinamnist", "--out", "/tmp/x", "--train-file", "/nonexistent.npz"], ["training file '/nonexistent.npz' does not exist"]),
    ],
)
def test_bad_augmentation_arguments(capsys, args, fragments):
    assert_one_line_error(*run_cli(capsys, *args)[::2], *fragments)


def test_partial_fills_and_confidence_filter_are_exact():
    from medpfgm.augment import confident, fraction_of_gap

    gap = np.array([0, 358, 280, 292, 420])
    np.testing.assert_array_equal(fraction_of_gap(gap, 0.25), [0, 89, 70, 73, 105])
    np.testing.assert_array_equal(fraction_of_gap(gap, 1.0), gap)
    with pytest.raises(MedpfgmError, match="--fill-fraction must lie in"):
        fraction_of_gap(gap, 0)
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.5, 0.5], [0.85, 0.15]])
    np.testing.assert_array_equal(confident(probs, np.array([0, 1, 1, 1]), 0.8), [True, False, False, False])


def test_weighted_cross_entropy_is_the_weighted_mean_of_per_image_losses():
    import torch

    from medpfgm.classifier import weighted_cross_entropy

    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(6, 4, generator=g), torch.tensor([0, 1, 2, 3, 0, 1])
    w, cw = torch.tensor([1.0, 1.0, 0.5, 0.5, 0.0, 1.0]), torch.tensor([1.0, 2.0, 1.0, 0.5])
    log_p = torch.log_softmax(logits.double(), 1)[torch.arange(6), y]
    expected = (w.double() * cw.double()[y] * -log_p).sum() / w.double().sum()
    assert weighted_cross_entropy(logits, y, w, cw).item() == pytest.approx(expected.item(), rel=1e-6)
    assert weighted_cross_entropy(logits, y, None, None).item() == pytest.approx((-log_p).mean().item(), rel=1e-6)


@pytest.mark.parametrize("monitor", ["balanced_accuracy", "loss"])
def test_patience_keeps_the_best_validation_epoch(data_root, monitor):
    from medpfgm.classifier import ClassifierConfig, balanced_nll, classification_metrics, predict_proba, train_classifier

    train, val = (load_split("retinamnist", 28, s, data_root) for s in ("train", "val"))
    cfg = ClassifierConfig(width=4, epochs=12, patience=1, batch_size=256, monitor=monitor)
    net, info = train_classifier(train.images, train.labels, 5, cfg, progress=False, val=(val.images, val.labels))
    watched = {"balanced_accuracy": np.array(info["val_balanced_accuracy"]), "loss": -np.array(info["val_balanced_loss"])}[monitor]  # higher is better
    cuts = info["lr_cut_after_epochs"]
    assert len(info["val_balanced_loss"]) == len(info["val_balanced_accuracy"]) == info["epochs_run"] <= 12
    assert info["best_epoch"] == int(np.argmax(watched)) + 1
    # each cut follows a plateau of `patience` epochs after the best epoch and the previous cut; the third plateau ends it
    assert len(cuts) <= 2 and all(c - max([int(np.argmax(watched[:c])) + 1, *cuts[:i]]) == 1 for i, c in enumerate(cuts))
    assert len(watched) == 12 or (len(cuts) == 2 and len(watched) - max(info["best_epoch"], cuts[-1]) == 1)
    probs = predict_proba(net, val.images)
    again = {"balanced_accuracy": classification_metrics(probs, val.labels)["balanced_accuracy"], "loss": -balanced_nll(probs, val.labels)}[monitor]
    assert again == pytest.approx(watched.max(), rel=1e-5)  # the returned weights are the best epoch's


def test_balanced_loss_weighs_every_class_alike():
    from medpfgm.classifier import MONITORS, balanced_nll
    from medpfgm.cli import classify

    monitor = next(o for o in classify.params if o.name == "monitor")
    assert tuple(monitor.type.choices) == MONITORS  # the CLI spells them out (it must not load torch) and stays in step

    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=50)
    labels = np.r_[np.zeros(40, int), rng.integers(1, 3, 10)]  # class 3 absent: it does not count
    per_class = {}
    for p, y in zip(probs.astype(np.float64), labels):
        per_class.setdefault(int(y), []).append(-math.log(p[y]))
    assert balanced_nll(probs, labels) == pytest.approx(sum(sum(v) / len(v) for v in per_class.values()) / len(per_class), rel=1e-12)


def test_filtered_fill_keeps_only_confident_images_of_the_set_it_fills(capsys, tmp_path, data_root):
    import torch

    from medpfgm.augment import filtered_fill

    class Oracle(torch.nn.Module):  # "confident" of class c exactly when the image's first pixel is c * 30
        def __init__(self):
            super().__init__()
            self.where = torch.nn.Parameter(torch.zeros(1))  # predict_proba asks a network for its device

        def forward(self, x):
            level = ((x[:, 0, 0, 0] + 1) * 127.5).round()
            return torch.nn.functional.one_hot((level / 30).round().long().clamp(0, 4), 5).float() * 20

    calls = []

    def draw(labels, seed, resume):  # half the images of each class come out "right"
        calls.append(len(labels))
        images = np.zeros((len(labels), 28, 28, 3), np.uint8)
        images[:, 0, 0, 0] = np.where(np.arange(len(labels)) % 2 == 0, labels, (labels + 1) % 5) * 30  # odd ones: another class
        return images

    missing = np.array([0, 7, 3, 0, 5])
    images, labels, kept = filtered_fill(draw, Oracle(), missing, 0.8, 0, tmp_path / "f.npz")
    np.testing.assert_array_equal(np.bincount(labels, minlength=5), missing)  # filled in full from confident images only
    assert (images[:, 0, 0, 0] == labels * 30).all()
    assert kept["kept"] == missing.tolist() and calls[0] == 2 * missing.sum()

    never = lambda labels, seed, resume: draw(labels, seed, resume) * (labels != 3)[:, None, None, None]  # noqa: E731  class 3: never confident
    calls.clear()
    images, labels, kept = filtered_fill(never, Oracle(), np.array([0, 2, 0, 4, 0]), 0.8, 0, tmp_path / "g.npz")
    assert kept == {"drawn": [0, 4, 0, 8, 0], "kept": [0, 2, 0, 0, 0]} and calls == [12]  # class 3 kept none: not drawn again

    # through the CLI (full BloodMNIST, target 860: 19 images of two classes to fill)
    run = tmp_path / "run"
    assert run_cli(capsys, "train", "--recipe", str(write_tiny_recipe(tmp_path / "t.toml")), "--run", str(run), "--steps", "2", "--quiet")[0] == 0
    clf = tmp_path / "clf"
    assert run_cli(capsys, "classify", "--dataset", "bloodmnist", "--out", str(clf), "--steps", "1", "--width", "4", "--quiet")[0] == 0
    fill = ["--target", "860", "--steps", "2", "--quiet"]
    code, _, err = run_cli(capsys, "augment", "--run", str(run), "--out", str(tmp_path / "a.npz"), "--filter", str(clf), "--min-confidence", "0.1", *fill)
    assert code == 0, err  # the run and the classifier both saw the set being filled: allowed
    provenance = json.loads((tmp_path / "a.npz.provenance.json").read_text())
    assert provenance["filter"]["min_confidence"] == 0.1 and provenance["filter"]["kept"] == provenance["filled"]
    assert not list(tmp_path.glob("a.*partial.npz"))  # the draws' files go once the fill is written
    assert sum(provenance["filter"]["drawn"]) >= 2 * 19
    lt = tmp_path / "lt"
    assert run_cli(capsys, "longtail", "--dataset", "bloodmnist", "--ratio", "10", "--out", str(lt))[0] == 0
    clf_lt = tmp_path / "clf_lt"
    assert run_cli(capsys, "classify", "--dataset", "bloodmnist", "--train-file", str(lt / "bloodmnist.npz"), "--out", str(clf_lt), "--steps", "1", "--width", "4", "--quiet")[0] == 0
    code, _, err = run_cli(capsys, "augment", "--run", str(run), "--out", str(tmp_path / "d.npz"), "--filter", str(clf_lt), *fill)
    assert_one_line_error(code, err, "--filter classifier was trained on class counts", "not on this training set")
    code, _, err = run_cli(capsys, "augment", "--run", str(run), "--out", str(tmp_path / "b.npz"), "--filter", str(tmp_path / "nowhere"), "--quiet")
    assert_one_line_error(code, err, "--filter", "is not a classifier folder")
    code, _, err = run_cli(capsys, "augment", "--run", str(run), "--out", str(tmp_path / "c.npz"), "--fill-fraction", "1.5", "--quiet")
    assert_one_line_error(code, err, "--fill-fraction must lie in (0, 1]")
