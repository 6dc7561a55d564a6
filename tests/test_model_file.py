"""The model file (ema.safetensors): what sampling needs, without the training state.

Training writes it beside every checkpoint; `medpfgm export` writes it at another dtype; a run folder
without `checkpoints/` samples the same images and can be trained on from its weights.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from medpfgm.errors import MedpfgmError
from medpfgm.io import load_model_file, save_model_file, tensors_sha256
from tests.test_cli import assert_one_line_error, run_cli, trained_run  # noqa: F401 (the fixture: a tiny PFGM run)


def weights_only_copy(run, dest):
    """The run folder as it is shared or committed: everything but checkpoints/."""
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("checkpoints", "samples"))
    return dest


def test_training_writes_the_ema_weights_exactly(trained_run):
    state = torch.load(trained_run / "checkpoints" / "last.pt", weights_only=True)
    model = load_model_file(trained_run / "ema.safetensors")
    assert model["step"] == state["step"] == 6 and model["dtype"] == "float32"
    assert model["config"] == state["config"]
    assert model["train_seconds"] == pytest.approx(state["train_seconds"], abs=1e-3)
    assert model["weights"].keys() == state["ema"].keys()
    for name, t in state["ema"].items():
        assert torch.equal(model["weights"][name], t), name


def test_float16_round_trip_and_the_header_hash(tmp_path):
    g = torch.Generator().manual_seed(0)
    weights = {"a.weight": torch.randn(7, 5, generator=g), "a.count": torch.tensor([3], dtype=torch.int64)}
    path = save_model_file(tmp_path / "m.safetensors", weights, {"method": "x"}, 12, "float16")
    back = load_model_file(path)
    assert back["dtype"] == "float16" and back["weights"]["a.weight"].dtype == torch.float32
    assert torch.equal(back["weights"]["a.weight"], weights["a.weight"].half().float())  # cast once, nothing more
    assert torch.equal(back["weights"]["a.count"], weights["a.count"])  # integers are never cast
    # the hash is over what is stored: an independent recomputation from the raw tensors and header agrees
    header = json.dumps({"config": json.dumps({"method": "x"}), "dtype": "float16", "step": "12"}, sort_keys=True)
    assert back["sha256"] == tensors_sha256({"a.weight": weights["a.weight"].half(), "a.count": weights["a.count"]}, header)


def test_damaged_and_foreign_model_files_are_refused(tmp_path, trained_run):
    good = (trained_run / "ema.safetensors").read_bytes()
    flipped = bytearray(good)
    flipped[len(good) - 100] ^= 0x01  # a bit inside the last tensor's data: safetensors itself reads it happily
    cases = {
        "flipped": (bytes(flipped), "do not match the SHA-256"),
        "truncated": (good[: len(good) // 2], "is corrupt"),
        "garbage": (b"not a model", "is corrupt"),
    }
    config_at = good.index(b'\\"sigma\\": 0.01')  # inside the header's config (JSON in JSON)
    edited = bytearray(good)
    edited[config_at + 11 : config_at + 15] = b"0.09"  # still valid JSON, a different sampler
    cases["config edited"] = (bytes(edited), "do not match the SHA-256")
    for name, (data, fragment) in cases.items():
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(data)
        with pytest.raises(MedpfgmError, match=fragment):
            load_model_file(path)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(MedpfgmError, match="not a medpfgm model file"):
        load_model_file(foreign)


def test_a_run_without_training_state_samples_the_same_images(capsys, trained_run, tmp_path):
    shared = weights_only_copy(trained_run, tmp_path / "shared")
    outs = []
    for folder in (trained_run, shared):
        out = tmp_path / f"{folder.name}.npz"
        code, _, err = run_cli(capsys, "synthesize", "--run", str(folder), "-n", "8", "--out", str(out), "--quiet")
        assert code == 0, err
        outs.append(np.load(out)["images"])
    assert np.array_equal(*outs)


def test_export_float16_samples_nearly_the_same_images(capsys, trained_run, tmp_path):
    shared = weights_only_copy(trained_run, tmp_path / "half")
    code, out, err = run_cli(capsys, "export", "--run", str(trained_run), "--dtype", "float16", "--out", str(shared / "ema.safetensors"))
    assert code == 0, err
    assert "float16" in out and "last.pt" in out  # from the training state, whatever model file is there
    assert (shared / "ema.safetensors").stat().st_size < 0.6 * (trained_run / "ema.safetensors").stat().st_size
    images = []
    for folder in (trained_run, shared):
        dest = tmp_path / f"{folder.name}_x.npz"
        assert run_cli(capsys, "synthesize", "--run", str(folder), "-n", "8", "--out", str(dest), "--quiet")[0] == 0
        images.append(np.load(dest)["images"].astype(int))
    diff = np.abs(images[0] - images[1])
    assert diff.mean() < 2.0  # rounding the weights to float16 moves a few pixels by a level or two, not the image


def test_export_refuses_bad_arguments(capsys, trained_run, tmp_path):
    code, _, err = run_cli(capsys, "export", "--run", str(trained_run), "--dtype", "int8")
    assert_one_line_error(code, err, "unknown --dtype 'int8'", "float16")
    code, _, err = run_cli(capsys, "export", "--run", str(tmp_path / "nowhere"))
    assert_one_line_error(code, err, "is not a run folder")


def test_training_continues_from_the_model_file_alone(capsys, trained_run, tmp_path):
    shared = weights_only_copy(trained_run, tmp_path / "continued")
    code, _, err = run_cli(capsys, "train", "--run", str(shared), "--quiet")
    assert_one_line_error(code, err, "already holds a trained run", "--resume")
    code, _, err = run_cli(capsys, "train", "--run", str(shared), "--resume", "--steps", "8", "--quiet")
    assert code == 0, err
    log = [json.loads(line) for line in (shared / "log.jsonl").read_text().splitlines()]
    events = [r for r in log if "event" in r]
    assert len(events) == 1 and events[0]["step"] == 6 and "not bit-exact" in events[0]["event"]
    assert [r["step"] for r in log if "loss" in r][-2:] == [7, 8]
    state = torch.load(shared / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == 8 and load_model_file(shared / "ema.safetensors")["step"] == 8
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-3)  # past the warm-up, not restarted
    start = load_model_file(trained_run / "ema.safetensors")["weights"]
    moved = max((state["model"][k] - start[k]).abs().max().item() for k in start if start[k].is_floating_point())
    assert 0 < moved < 0.1  # two steps from the shared weights, not from a fresh initialisation


def test_a_run_with_neither_file_is_one_line(capsys, trained_run, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(trained_run / "config.json", empty / "config.json")
    code, _, err = run_cli(capsys, "synthesize", "--run", str(empty), "-n", "2")
    assert_one_line_error(code, err, "has no model (ema.safetensors) and no checkpoint")
    code, _, err = run_cli(capsys, "train", "--run", str(empty), "--resume", "--quiet")
    assert_one_line_error(code, err, "no checkpoint and no ema.safetensors")


def test_resume_auto_starts_an_empty_folder_and_resumes_a_run(tmp_path, tiny_recipe):
    from medpfgm.config import load_recipe
    from medpfgm.train import train

    cfg = load_recipe(tiny_recipe)
    folder = tmp_path / "auto"
    assert train(folder, cfg, torch.device("cpu"), resume="auto", progress=False, steps=3)["step"] == 3
    assert train(folder, cfg, torch.device("cpu"), resume="auto", progress=False, steps=5)["step"] == 5
    steps = [json.loads(line)["step"] for line in (folder / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]  # one run extended, not a second run over the first
