"""Long-tailed sets and class-balanced fill: counts, file layout, provenance and the loaders."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medpfgm.augment import fill_counts, long_tailed_counts
from medpfgm.data import load_split, read_npz_split
from medpfgm.errors import MedpfgmError
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

    for extra in ([], ["--synthetic-only", "--balanced", "--augment", "--reweight"]):
        code, out, err = run_cli(capsys, "classify", "--dataset", "retinamnist", "--train-file", str(out_file), *extra, "--epochs", "1", "--width", "4", "--out", str(tmp_path / "clf"), "--quiet", "--device", "cpu")
        assert code == 0, err
        meta = json.loads((tmp_path / "clf" / "classifier.json").read_text())
        expected = np.bincount(labels[mask] if extra else labels, minlength=5)
        assert meta["train_counts"] == expected.tolist() and "test accuracy" in out


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
