"""Data loading: real files, MD5 checks, roots, the other sizes and DermaMNIST through built files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medpfgm import data
from medpfgm.errors import MedpfgmError
from tests.conftest import write_medmnist_npz


def test_real_bloodmnist_loads_with_official_counts(data_root):
    split = data.load_split("bloodmnist", 28, "train", data_root, download=False)
    assert split.images.shape == (11959, 28, 28, 3) and split.images.dtype == np.uint8
    assert split.class_counts().tolist() == [852, 2181, 1085, 2026, 849, 993, 2330, 1643]
    assert data.class_names("bloodmnist")[7] == "platelet"


def test_root_comes_from_argument_then_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDPFGM_DATA", str(tmp_path / "env"))
    assert data.resolve_root(tmp_path / "arg") == tmp_path / "arg"
    assert data.resolve_root() == tmp_path / "env"
    monkeypatch.delenv("MEDPFGM_DATA")
    assert data.resolve_root().name == ".medmnist"


def test_wrong_md5_is_refused_with_one_line(tmp_path):
    write_medmnist_npz(tmp_path / "retinamnist.npz", 28, 5)
    with pytest.raises(MedpfgmError) as err:
        data.load_split("retinamnist", 28, "train", tmp_path, download=False)
    message = str(err.value)
    assert "MD5" in message and "retinamnist.npz" in message and "\n" not in message


def test_missing_file_names_file_root_and_remedy(tmp_path):
    with pytest.raises(MedpfgmError, match=r"dermamnist_64\.npz.*not found.*--data-root"):
        data.load_split("dermamnist", 64, "train", tmp_path, download=False)


@pytest.mark.parametrize("dataset,size,n_classes", [("dermamnist", 28, 7), ("bloodmnist", 64, 8), ("retinamnist", 224, 5)])
def test_other_sizes_and_dermamnist_from_built_files(tmp_path, monkeypatch, dataset, size, n_classes):
    path = write_medmnist_npz(tmp_path / f"{dataset}{'' if size == 28 else f'_{size}'}.npz", size, n_classes)
    info = data._info()[dataset]
    monkeypatch.setitem(info, "MD5" if size == 28 else f"MD5_{size}", data.md5sum(path))  # as if official
    split = data.load_split(dataset, size, "test", tmp_path, download=False)
    assert split.images.shape == (12, size, size, 3)
    assert split.class_counts().sum() == 12 and split.num_classes == n_classes


def test_unknown_dataset_size_and_class_are_one_line_errors():
    with pytest.raises(MedpfgmError, match="unknown dataset 'pathmnist'; choose one of: bloodmnist, dermamnist, retinamnist"):
        data.check_dataset("pathmnist")
    with pytest.raises(MedpfgmError, match="size 32 is not available; choose one of: 28, 64, 128, 224"):
        data.check_size(32)
    with pytest.raises(MedpfgmError, match=r"class 8 is out of range for bloodmnist: 0\.\.7 \(0 basophil"):
        data.check_class("bloodmnist", 8)


def test_batches_are_scaled_flipped_and_reproducible(data_root):
    split = data.load_split("bloodmnist", 28, "train", data_root, download=False)
    batches = data.RandomBatches(split, flip=True)
    x1, y1 = batches.sample(256, torch.Generator().manual_seed(0))
    x2, y2 = batches.sample(256, torch.Generator().manual_seed(0))
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert x1.shape == (256, 3, 28, 28) and x1.dtype == torch.float32
    assert x1.min() >= -1 and x1.max() <= 1
    # each batch image is a (possibly flipped) training image of its label
    idx = torch.randint(len(split.labels), (256,), generator=torch.Generator().manual_seed(0)).numpy()
    plain = data.to_unit_range(split.images[idx])
    variants = torch.stack([plain, plain.flip(-1), plain.flip(-2), plain.flip(-1).flip(-2)])
    matches = (variants == x1[None]).flatten(2).all(2)
    assert matches.any(0).all()
    unflipped = matches[0].double().mean()  # 1/4 of images get neither flip
    assert 0.1 < unflipped < 0.5
    assert torch.equal(y1, torch.from_numpy(split.labels[idx]))


def test_uint8_round_trip():
    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    assert np.array_equal(data.to_uint8(data.to_unit_range(images)), images)


def test_the_catalog_agrees_with_medmnist():
    from medmnist.info import INFO

    from medpfgm import catalog

    for dataset in catalog.DATASETS:
        labels = INFO[dataset]["label"]
        assert catalog.class_names(dataset) == [labels[str(i)] for i in range(len(labels))]
        assert catalog.num_channels(dataset) == INFO[dataset]["n_channels"]
