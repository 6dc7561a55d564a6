"""Every size on every method: a tiny UNet trained, sampled and evaluated at 64, 128 and 224 px on
MedMNIST-format files the test builds (DermaMNIST among them); bf16 autocast on CPU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medpfgm.cli import main
from tests.conftest import TINY_RECIPE, write_medmnist_npz

pytestmark = pytest.mark.slow

DATASETS = [("dermamnist", 7), ("bloodmnist", 8), ("retinamnist", 5)]
CASES = [(method, *DATASETS[(i + j) % 3][:1], size, DATASETS[(i + j) % 3][1]) for i, method in enumerate(("pfgm", "pfgmpp", "ddpm", "vapo")) for j, size in enumerate((64, 128, 224))]
SOLVERS = {"pfgm": ["--solver", "euler", "--steps", "2"], "pfgmpp": ["--solver", "heun", "--steps", "2"], "ddpm": ["--solver", "ddim", "--steps", "2"],
           "vapo": ["--solver", "euler", "--steps", "2"]}  # fmt: skip


def tiny_recipe(path: Path, method: str, dataset: str, size: int, amp: bool = False) -> Path:
    text = TINY_RECIPE.replace('method = "pfgm"', f'method = "{method}"').replace('dataset = "bloodmnist"', f'dataset = "{dataset}"')
    text = text.replace("size = 28", f"size = {size}").replace("steps = 6", "steps = 2").replace("batch_size = 16\nlr", "batch_size = 4\nlr")
    text = text.replace("field_batch = 128", "field_batch = 8").replace('solver = "euler"', f'solver = "{SOLVERS[method][1]}"')
    text = text.replace("[train]", f"[train]\namp = {'true' if amp else 'false'}")
    if size > 28:  # MONAI's middle block always attends: keep it at 28 px or less (224 px with 2 levels: 12,544 tokens, 16 GB)
        text = text.replace("channels = [16, 32]", "channels = [8, 8, 16, 16]").replace("attention_levels = [false, false]", "attention_levels = [false, false, false, false]")
        text = text.replace("num_head_channels = 16", "num_head_channels = 8")
    path.write_text(text)
    return path


@pytest.mark.parametrize("method,dataset,size,n_classes", CASES)
def test_train_synthesize_evaluate_round_trip(tmp_path, monkeypatch, capsys, method, dataset, size, n_classes):
    root = tmp_path / "data"
    root.mkdir()
    write_medmnist_npz(root / f"{dataset}_{size}.npz", size, n_classes, per_split=24)
    monkeypatch.setenv("MEDPFGM_DATA", str(root))
    common = ["--no-verify", "--quiet", "--device", "cpu"]
    run = tmp_path / "run"
    assert main(["train", "--recipe", str(tiny_recipe(tmp_path / "r.toml", method, dataset, size)), "--run", str(run), *common]) == 0
    out = tmp_path / "s.npz"
    assert main(["synthesize", "--run", str(run), "-n", "3", "--class", "1", "--out", str(out), "--quiet", *SOLVERS[method]]) == 0
    with np.load(out) as f:
        assert f["images"].shape == (3, size, size, 3) and f["labels"].tolist() == [1, 1, 1]
    reports = tmp_path / "reports"
    clf = reports / f"{dataset}_{size}" / "classifier"
    assert main(["classify", "--dataset", dataset, "--size", str(size), "--out", str(clf), "--steps", "2", "--width", "4", *common]) == 0
    code = main(["evaluate", "--run", str(run), *SOLVERS[method], "-n", "10", "--metrics", "domain", "--repeats", "1", "--reports", str(reports), *common])
    assert code == 0, capsys.readouterr().err
    record = json.loads(next((reports / f"{dataset}_{size}" / "evaluations").glob("*.json")).read_text())
    assert record["setup"]["size"] == size and np.isfinite(record["score"]["domain"]["fd"]["mean"])


@pytest.mark.parametrize("method", ["pfgm", "pfgmpp", "ddpm", "vapo"])
def test_bf16_autocast_trains_and_samples_on_cpu(tmp_path, monkeypatch, data_root, method):
    monkeypatch.setenv("MEDPFGM_DATA", str(data_root))
    run = tmp_path / "run"
    recipe = tiny_recipe(tmp_path / "r.toml", method, "bloodmnist", 28, amp=True)
    assert main(["train", "--recipe", str(recipe), "--run", str(run), "--steps", "4", "--quiet", "--device", "cpu"]) == 0
    assert json.loads((run / "config.json").read_text())["train"]["amp"] is True
    losses = [json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert len(losses) == 4 and all(np.isfinite(losses))
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert all(v.dtype == torch.float32 for v in state["ema"].values() if v.is_floating_point())  # autocast keeps fp32 weights
    out = tmp_path / "s.npz"
    assert main(["synthesize", "--run", str(run), "-n", "4", "--out", str(out), "--quiet", *SOLVERS[method]]) == 0
    with np.load(out) as f:
        assert f["images"].shape == (4, 28, 28, 3)
