"""DDP on CPU (gloo): K processes under torchrun train the run one process trains, resume it exactly,
and sample the images one process samples."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from medpfgm.cli import main
from tests.conftest import write_tiny_recipe

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args: list[str], data_root: Path, nproc: int = 2, launcher: list[str] | None = None, wait: bool = True):
    """`torchrun … -m medpfgm.cli ARGS` with one thread per process; returns the finished process or the Popen."""
    env = {**os.environ, "MEDPFGM_DATA": str(data_root), "OMP_NUM_THREADS": "1"}
    launcher = launcher or ["--standalone", f"--nproc-per-node={nproc}"]
    cmd = [sys.executable, "-m", "torch.distributed.run", *launcher, "-m", "medpfgm", "--", *args]  # "--": torchrun would read --run
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines()]


def assert_same_run(a: Path, b: Path) -> None:
    """Same losses step by step and the same EMA weights, to float tolerance (sums in another order)."""
    np.testing.assert_allclose(losses(a), losses(b), rtol=2e-5)
    ema_a = torch.load(a / "checkpoints" / "last.pt", weights_only=True)["ema"]
    ema_b = torch.load(b / "checkpoints" / "last.pt", weights_only=True)["ema"]
    for key in ema_a:
        torch.testing.assert_close(ema_a[key], ema_b[key], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method,dropout", [("pfgmpp", "0"), ("ddpm", "0"), ("pfgm", "0"), ("pfgm", "0.3"), ("vapo", "0")])
def test_two_processes_train_the_run_of_one(tmp_path, data_root, monkeypatch, method, dropout):
    # VAPO: its loss differentiates the network's input gradient (double backward) under DDP;
    # label dropout: every rank must drop the same labels (and PFGM's null points see every charge)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    recipe = str(write_tiny_recipe(tmp_path / "tiny.toml", method))
    extra = ["--label-dropout", dropout] if dropout != "0" else []
    assert main(["train", "--recipe", recipe, "--run", str(tmp_path / "one"), "--quiet", *extra]) == 0
    torchrun(["train", "--recipe", recipe, "--run", str(tmp_path / "two"), "--quiet", *extra], data_root)
    assert_same_run(tmp_path / "one", tmp_path / "two")
    assert len(losses(tmp_path / "two")) == 6  # rank 0 alone writes the log


def test_a_ddp_run_resumes_exactly_and_refuses_an_indivisible_batch(tmp_path, data_root, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    recipe = str(write_tiny_recipe(tmp_path / "tiny.toml", "pfgmpp"))
    torchrun(["train", "--recipe", recipe, "--run", str(tmp_path / "full"), "--quiet"], data_root)
    torchrun(["train", "--recipe", recipe, "--run", str(tmp_path / "cut"), "--steps", "3", "--quiet"], data_root)
    torchrun(["train", "--run", str(tmp_path / "cut"), "--resume", "--steps", "6", "--quiet"], data_root)
    a = torch.load(tmp_path / "full" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=True)
    for key in a["ema"]:
        assert torch.equal(a["ema"][key], b["ema"][key])  # same machine, same ranks: bit for bit
    assert losses(tmp_path / "full") == losses(tmp_path / "cut")
    env = {**os.environ, "MEDPFGM_DATA": str(data_root), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=3", "-m", "medpfgm", "--",
           "train", "--recipe", recipe, "--run", str(tmp_path / "three"), "--quiet"]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0 and "batch size 16 does not divide among 3 processes" in done.stderr


def test_two_nodes_of_one_process_each_train_one_run(tmp_path, data_root, monkeypatch):
    """Multi-node, simulated: two torchrun launchers on 127.0.0.1 meet through the c10d rendezvous."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    recipe = str(write_tiny_recipe(tmp_path / "tiny.toml", "pfgmpp"))
    assert main(["train", "--recipe", recipe, "--run", str(tmp_path / "one"), "--quiet"]) == 0
    port = free_port()
    nodes = [
        torchrun(["train", "--recipe", recipe, "--run", str(tmp_path / "nodes"), "--quiet"], data_root, wait=False,
                 launcher=["--nnodes=2", f"--node-rank={rank}", "--nproc-per-node=1", "--rdzv-backend=c10d",
                           f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=medpfgm-test"])  # fmt: skip
        for rank in (0, 1)
    ]
    for node in nodes:
        _, err = node.communicate(timeout=600)
        assert node.returncode == 0, err[-3000:]
    assert_same_run(tmp_path / "one", tmp_path / "nodes")


def test_two_processes_sample_the_images_of_one(tmp_path, data_root, monkeypatch):
    """synthesize under torchrun shares the batches out and gives one process's images, in order; a
    killed one-process call's partial file is taken up by two processes."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    recipe = str(write_tiny_recipe(tmp_path / "tiny.toml", "pfgmpp"))
    run = str(tmp_path / "run")
    assert main(["train", "--recipe", recipe, "--run", run, "--quiet"]) == 0
    common = ["-n", "36", "--batch-size", "8", "--solver", "heun", "--steps", "3", "--quiet"]  # 5 batches: the last round is uneven
    assert main(["synthesize", "--run", run, *common, "--out", str(tmp_path / "one.npz")]) == 0
    torchrun(["synthesize", "--run", run, *common, "--out", str(tmp_path / "two.npz")], data_root)
    with np.load(tmp_path / "one.npz") as a, np.load(tmp_path / "two.npz") as b:
        assert np.array_equal(a["images"], b["images"]) and np.array_equal(a["labels"], b["labels"])
        assert a["nfe"].tolist() == b["nfe"].tolist() == [5] * 5
    assert not (tmp_path / "two.partial.npz").exists()


def test_two_processes_evaluate_as_one(tmp_path, data_root, monkeypatch):
    """evaluate under torchrun: the helper rank samples its share, rank 0 scores; the result equals one process's."""
    from medpfgm.classifier import ClassifierConfig, save_classifier, train_classifier
    from medpfgm.data import load_split

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run = str(tmp_path / "run")
    assert main(["train", "--recipe", str(write_tiny_recipe(tmp_path / "tiny.toml", "pfgmpp")), "--run", run, "--quiet"]) == 0
    train = load_split("bloodmnist", 28, "train", data_root)
    net, _ = train_classifier(train.images[:200], train.labels[:200], 8, ClassifierConfig(width=4, epochs=1), progress=False)
    for name in ("one", "two"):
        save_classifier(tmp_path / name / "bloodmnist_28" / "classifier", net, ClassifierConfig(width=4, epochs=1), {"dataset": "bloodmnist", "size": 28, "test": {"accuracy": 0.5}})
    shutil.copytree(run, tmp_path / "run2")  # its own samples cache: the two processes must sample, not read the first call's file
    common = ["--solver", "heun", "--steps", "2", "-n", "40", "--batch-size", "8", "--metrics", "domain", "--repeats", "2", "--quiet"]
    assert main(["evaluate", "--run", run, *common, "--reports", str(tmp_path / "one")]) == 0
    torchrun(["evaluate", "--run", str(tmp_path / "run2"), *common, "--reports", str(tmp_path / "two")], data_root)
    assert len(list((tmp_path / "run2" / "samples").glob("eval_*.npz"))) == 1
    one, two = (json.loads((tmp_path / name / "bloodmnist_28" / "evaluations" / "pfgmpp_d128_heun2.json").read_text()) for name in ("one", "two"))
    assert one["score"] == two["score"] and one["floor"] == two["floor"]


def test_two_processes_fill_as_one(tmp_path, data_root, monkeypatch):
    """augment under torchrun: the same synthetic fill as one process, image for image (with guidance: 2 NFE)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run = str(tmp_path / "run")
    assert main(["train", "--recipe", str(write_tiny_recipe(tmp_path / "tiny.toml", "pfgmpp")), "--run", run, "--label-dropout", "0.2", "--quiet"]) == 0
    common = ["--target", "860", "--batch-size", "8", "--steps", "2", "--guidance", "1.5", "--quiet"]  # 19 images, 3 batches
    assert main(["augment", "--run", run, *common, "--out", str(tmp_path / "one.npz")]) == 0
    torchrun(["augment", "--run", run, *common, "--out", str(tmp_path / "two.npz")], data_root)
    with np.load(tmp_path / "one.npz") as a, np.load(tmp_path / "two.npz") as b:
        assert a["train_synthetic"].sum() == 19
        for key in ("train_images", "train_labels", "train_synthetic"):
            assert np.array_equal(a[key], b[key]), key
