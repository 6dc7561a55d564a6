"""The Python API as the README shows it: load a run, sample a class, read real + synthetic images
through a MONAI transform and a DataLoader."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import medpfgm
from medpfgm.cli import main
from tests.conftest import write_tiny_recipe

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, data_root):
    run = tmp_path_factory.mktemp("api") / "run"
    with pytest.MonkeyPatch.context() as mp:  # module-scoped: the autouse environment fixture is not active yet
        mp.setenv("MEDPFGM_DATA", str(data_root))
        assert main(["train", "--recipe", str(write_tiny_recipe(run.parent / "t.toml")), "--run", str(run), "--quiet", "--device", "cpu"]) == 0
    return run


def test_readme_example_runs(tiny_run, tmp_path):
    """The README's example, run as written (its run folder and file names swapped for test ones)."""
    text = (ROOT / "README.md").read_text()
    example = text.split("<!-- api-example -->")[1].split("```python")[1].split("```")[0]
    fill = tmp_path / "fill.npz"
    images = np.random.default_rng(0).integers(0, 256, (6, 28, 28, 3), dtype=np.uint8)
    np.savez(fill, train_images=images, train_labels=np.arange(6)[:, None] % 8, train_synthetic=np.array([0, 0, 0, 1, 1, 1], bool))
    code = example.replace("reports/bloodmnist_28/pfgmpp_d128/run", str(tiny_run)).replace("fill.npz", str(fill))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr


def test_sample_matches_the_cli_and_the_dataset_feeds_a_loader(tiny_run, tmp_path, capsys):
    run = medpfgm.load_run(tiny_run)
    images, labels = medpfgm.synthesize(run, n=5, class_id=3, solver="euler", steps=3, seed=7)
    assert images.shape == (5, 28, 28, 3) and images.dtype == np.uint8 and labels.tolist() == [3] * 5
    out = tmp_path / "cli.npz"
    assert main(["synthesize", "--run", str(tiny_run), "--class", "3", "-n", "5", "--solver", "euler", "--steps", "3", "--seed", "7", "--out", str(out), "--quiet"]) == 0
    data = medpfgm.ImageDataset(out)  # a samples file: every image synthetic
    assert np.array_equal(data.images, images)  # the API and the CLI draw the same images
    from monai.transforms import Compose, RandFlipd, ScaleIntensityd

    data.transform = Compose([ScaleIntensityd(keys="image", minv=-1.0, maxv=1.0), RandFlipd(keys="image", prob=1.0, spatial_axis=1)])
    batch = next(iter(torch.utils.data.DataLoader(data, batch_size=5)))
    assert batch["image"].shape == (5, 3, 28, 28) and batch["synthetic"].all() and batch["label"].tolist() == [3] * 5
    flipped = torch.from_numpy(images[0].transpose(2, 0, 1)).float().flip(-1)
    expected = (flipped - flipped.min()) / (flipped.max() - flipped.min()) * 2 - 1
    torch.testing.assert_close(torch.as_tensor(batch["image"][0]), expected)
    with pytest.raises(medpfgm.MedpfgmError, match="class 9 is out of range"):
        medpfgm.synthesize(run, n=2, class_id=9)


@pytest.mark.parametrize(
    "arrays,fragment",
    [
        ({"train_images": np.zeros((3, 28, 28, 3), np.uint8)}, "train_labels"),
        ({"images": np.zeros((3, 28, 28, 3), np.float32), "labels": np.zeros(3, np.int64)}, "must hold uint8 images"),
        ({"images": np.zeros((3, 28, 28, 3), np.uint8), "labels": np.zeros(2, np.int64)}, "must hold uint8 images"),
        ({"train_images": np.zeros((3, 28, 28, 3), np.uint8), "train_labels": np.zeros((3, 1)), "train_synthetic": np.zeros(2, bool)}, "integer label"),
        ({"train_images": np.zeros((3, 28, 28, 3), np.uint8), "train_labels": np.zeros((3, 1), np.int64), "train_synthetic": np.zeros(2, bool)}, "n mask entries"),
    ],
)
def test_bad_image_files_are_one_line_errors(tmp_path, arrays, fragment):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(medpfgm.MedpfgmError, match=fragment):
        medpfgm.ImageDataset(path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(medpfgm.MedpfgmError, match="cannot be read"):
        medpfgm.read_image_file(path)
