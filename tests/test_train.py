"""The trainer on real images: the loss falls, and a resumed run continues exactly."""

from __future__ import annotations

import dataclasses
import shutil

import pytest
import torch
from torch.optim.swa_utils import AveragedModel

from medpfgm.config import load_recipe
from medpfgm.io import read_jsonl
from medpfgm.nets import count_parameters
from medpfgm.train import Trainer, ema_decay_at, ema_update, resolve_config, train
from medpfgm.data import load_split
from tests.conftest import write_tiny_recipe


METHODS = ["pfgm", "pfgmpp", "ddpm"]


@pytest.mark.parametrize("method", METHODS)
def test_tiny_unet_loss_falls_on_real_images(tmp_path, data_root, method):
    cfg = load_recipe(write_tiny_recipe(tmp_path / "tiny.toml", method))
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, batch_size=32, lr=2e-3))
    split = load_split("bloodmnist", 28, "train", data_root)
    cfg = resolve_config(cfg, split.images)
    trainer = Trainer(cfg, split, torch.device("cpu"))
    assert 50_000 < count_parameters(trainer.net) < 400_000
    losses = [trainer.train_step()[0] for _ in range(40)]
    first, last = sum(losses[:8]) / 8, sum(losses[-8:]) / 8
    assert last < 0.8 * first, (first, last)


@pytest.mark.parametrize("method", METHODS)
def test_resume_reproduces_the_uninterrupted_run(tmp_path, data_root, method):
    cfg = load_recipe(write_tiny_recipe(tmp_path / "tiny.toml", method))  # 6 steps, checkpoint every 3, log every step
    full = train(tmp_path / "full", cfg, torch.device("cpu"), progress=False)
    assert full["step"] == 6
    # a run killed after its step-3 checkpoint: copy that state, then resume
    short = train(tmp_path / "cut", dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=3)), torch.device("cpu"), progress=False)
    assert short["step"] == 3
    kept = train(tmp_path / "cut", cfg, torch.device("cpu"), resume=True, progress=False)
    assert kept["step"] == 3  # a resumed run keeps its saved target unless steps moves it
    resumed = train(tmp_path / "cut", cfg, torch.device("cpu"), resume=True, progress=False, steps=6)
    assert resumed["step"] == 6
    full_log = {r["step"]: r["last_loss"] for r in read_jsonl(tmp_path / "full" / "log.jsonl")}
    cut_log = {r["step"]: r["last_loss"] for r in read_jsonl(tmp_path / "cut" / "log.jsonl")}
    assert sorted(cut_log) == [1, 2, 3, 4, 5, 6]
    assert [cut_log[s] for s in (4, 5, 6)] == [full_log[s] for s in (4, 5, 6)]  # bit-exact
    a = torch.load(tmp_path / "full" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=True)
    for key in a["ema"]:
        assert torch.equal(a["ema"][key], b["ema"][key])
    assert (tmp_path / "full" / "loss.png").stat().st_size > 1000
    shutil.rmtree(tmp_path / "full")


@pytest.mark.parametrize("rampup", [0.0, 0.5])
def test_ema_follows_its_half_life_rule(rampup):
    decay, net = 0.8, torch.nn.Linear(3, 2)  # half-life ln 0.5 / ln 0.8 = 3.1 steps, reached at n = 6.2 with rampup 0.5
    ema = AveragedModel(net, multi_avg_fn=ema_update(decay, rampup), use_buffers=True)
    expected = None
    for n in range(10):
        with torch.no_grad():
            net.weight.copy_(torch.randn(2, 3))
        ema.update_parameters(net)
        w = net.weight.detach().double().clone()
        if expected is None:
            expected = w  # the first update copies
        else:
            halflife = 3.1062837195 if rampup == 0 else min(3.1062837195, rampup * n)
            beta = 0.5 ** (1 / halflife)
            expected = beta * expected + (1 - beta) * w
        torch.testing.assert_close(ema.module.weight.double(), expected, rtol=1e-5, atol=1e-6)
    if rampup == 0:
        assert ema_decay_at(7, decay, 0.0) == pytest.approx(decay)
    assert ema_decay_at(1500, 0.999, 0.05) == pytest.approx(0.5 ** (1 / 75))  # a short run: half-life 75 steps


@pytest.mark.parametrize("conditional", [True, False])
def test_pfgm_field_target_sees_labels_only_when_conditional(tmp_path, data_root, conditional):
    cfg = load_recipe(write_tiny_recipe(tmp_path / "tiny.toml", "pfgm"))
    split = load_split("bloodmnist", 28, "train", data_root)
    cfg = resolve_config(dataclasses.replace(cfg, conditional=conditional), split.images)
    trainer = Trainer(cfg, split, torch.device("cpu"))
    assert (trainer.net.num_class_embeds is not None) == conditional
    images = torch.as_tensor(split.images[:128]).permute(0, 3, 1, 2).float() / 127.5 - 1
    labels = torch.as_tensor(split.labels[:128])
    shuffled = labels[torch.randperm(128, generator=torch.Generator().manual_seed(0))]
    with torch.no_grad():
        losses = [trainer.method.loss(trainer.net, images, y, torch.Generator().manual_seed(1)).item() for y in (labels, shuffled)]
    # other labels move the charges each point sees (and the class embedding): a conditional loss changes
    assert (losses[0] != losses[1]) == conditional
