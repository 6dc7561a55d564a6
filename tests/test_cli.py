"""The command line end to end with a tiny recipe, and every bad input as a one-line error."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import torch
import pytest

from pathlib import Path

from medpfgm.cli import main
from tests.conftest import write_medmnist_npz


ROOT = Path(__file__).resolve().parents[1]


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, data_root):
    """A tiny PFGM run trained through the CLI (module-scoped: several tests sample from it)."""
    import pytest as _pytest

    tmp = tmp_path_factory.mktemp("cli")
    recipe = tmp / "tiny.toml"
    from tests.conftest import TINY_RECIPE

    recipe.write_text(TINY_RECIPE)
    mp = _pytest.MonkeyPatch()
    mp.setenv("MEDPFGM_DATA", str(data_root))
    code = main(["train", "--recipe", str(recipe), "--run", str(tmp / "run"), "--quiet", "--device", "cpu"])
    mp.undo()
    assert code == 0
    return tmp / "run"


def test_train_then_synthesize_one_class(capsys, trained_run, tmp_path):
    out = tmp_path / "c3.npz"
    code, stdout, err = run_cli(capsys, "synthesize", "--run", str(trained_run), "--class", "3", "-n", "5", "--out", str(out), "--quiet", "--solver", "euler", "--steps", "4", "--z-exp", "0.5")
    assert code == 0, err
    with np.load(out) as f:
        assert f["images"].shape == (5, 28, 28, 3) and f["images"].dtype == np.uint8
        assert f["labels"].tolist() == [3] * 5
        assert f["nfe"].tolist() == [4]
    assert out.with_suffix(".png").stat().st_size > 1000
    assert "NFE 4" in stdout


def test_synthesize_all_classes_balanced(capsys, trained_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = sorted(p.relative_to(trained_run) for p in trained_run.rglob("*"))
    code, stdout, err = run_cli(capsys, "synthesize", "--run", str(trained_run), "-n", "16", "--quiet", "--solver", "heun", "--steps", "3")
    assert code == 0, err
    files = sorted((tmp_path / "samples" / "pfgm_bloodmnist_28").glob("all_heun_n16_seed0.*"))
    assert [f.suffix for f in files] == [".npz", ".png"]
    assert sorted(p.relative_to(trained_run) for p in trained_run.rglob("*")) == before  # the run folder is left as it was
    with np.load(files[0]) as f:
        assert np.bincount(f["labels"]).tolist() == [2] * 8
        assert f["nfe"].tolist() == [5]


def test_training_config_and_log_are_in_the_run_folder(trained_run):
    import json

    cfg = json.loads((trained_run / "config.json").read_text())
    assert cfg["pfgm"]["m_max"] > 200 and cfg["pfgm"]["z_max"] > 10  # derived from the data
    assert len((trained_run / "log.jsonl").read_text().splitlines()) == 6


@pytest.mark.parametrize(
    "args,fragments",
    [
        (["train", "--dataset", "pathmnist"], ["unknown dataset 'pathmnist'", "bloodmnist, dermamnist, retinamnist"]),
        (["train", "--size", "32"], ["size 32", "28, 64, 128, 224"]),
        (["train", "--steps", "0"], ["--steps must be a positive integer, got 0"]),
        (["train", "--device", "tpu"], ["unknown device 'tpu'"]),
        (["train", "--size", "abc"], ["'abc' is not a valid integer"]),
        (["synthesize", "--run", "does/not/exist", "-n", "4"], ["run folder 'does/not/exist' does not exist"]),
    ],
)
def test_bad_arguments(capsys, args, fragments):
    code, _, err = run_cli(capsys, *args)
    assert_one_line_error(code, err, *fragments)


def test_bad_synthesize_arguments(capsys, trained_run, tmp_path):
    run = str(trained_run)
    cases = [
        (["--class", "8", "-n", "4"], ["class 8 is out of range for bloodmnist: 0..7", "7 platelet"]),
        (["--class", "-1", "-n", "4"], ["class -1 is out of range"]),
        (["-n", "0"], ["-n must be a positive integer, got 0"]),
        (["-n", "2", "--solver", "ddim"], ["solver 'ddim' is not available for pfgm; choose one of: rk45, euler, heun"]),
        (["-n", "2", "--z-exp", "-1"], ["--z-exp takes a value >= 0 for pfgm runs only (got -1.0"]),
    ]
    for args, fragments in cases:
        code, _, err = run_cli(capsys, "synthesize", "--run", run, *args, "--quiet")
        assert_one_line_error(code, err, *fragments)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code, _, err = run_cli(capsys, "synthesize", "--run", run, "-n", "2", "--out", str(blocker / "x.npz"), "--quiet")
    assert_one_line_error(code, err, "cannot write --out", "a_file")


def test_missing_and_corrupt_checkpoints(capsys, trained_run, tmp_path):
    empty = tmp_path / "empty_run"
    empty.mkdir()
    shutil.copy(trained_run / "config.json", empty / "config.json")
    code, _, err = run_cli(capsys, "synthesize", "--run", str(empty), "-n", "2")
    assert_one_line_error(code, err, "has no model", "no checkpoint")

    broken = tmp_path / "broken_run"  # a run from before model files: its checkpoint is what is read
    shutil.copytree(trained_run, broken, ignore=shutil.ignore_patterns("ema.safetensors"))
    ckpt = broken / "checkpoints" / "last.pt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])  # truncated
    code, _, err = run_cli(capsys, "synthesize", "--run", str(broken), "-n", "2")
    assert_one_line_error(code, err, "is corrupt", "last.pt")
    ckpt.write_bytes(b"not a checkpoint at all")
    code, _, err = run_cli(capsys, "synthesize", "--run", str(broken), "-n", "2")
    assert_one_line_error(code, err, "is corrupt")


def test_existing_run_needs_resume_and_keeps_its_checkpoint(capsys, trained_run, tiny_recipe):
    before = (trained_run / "checkpoints" / "last.pt").read_bytes()
    code, _, err = run_cli(capsys, "train", "--recipe", str(tiny_recipe), "--run", str(trained_run), "--quiet")
    assert_one_line_error(code, err, "already holds a trained run", "--resume")
    assert (trained_run / "checkpoints" / "last.pt").read_bytes() == before


def test_wrong_md5_and_missing_data_files(capsys, tmp_path, tiny_recipe):
    write_medmnist_npz(tmp_path / "bloodmnist.npz", 28, 8)
    code, _, err = run_cli(capsys, "train", "--recipe", str(tiny_recipe), "--run", str(tmp_path / "r"), "--data-root", str(tmp_path), "--quiet")
    assert_one_line_error(code, err, "has MD5", "expected 7053d0359d879ad8a5505303e11de1dc", "--no-verify")
    # the same file is accepted for what it is with --no-verify
    code, _, err = run_cli(capsys, "train", "--recipe", str(tiny_recipe), "--run", str(tmp_path / "r"), "--data-root", str(tmp_path), "--quiet", "--no-verify", "--steps", "1")
    assert code == 0, err


def test_console_script_prints_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "medpfgm.cli", "synthesize", "--run", str(tmp_path / "nope"), "-n", "3"],
        capture_output=True,
        text=True,
        timeout=600,  # imports alone can take minutes on a loaded 2-core machine
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: run folder '{tmp_path / 'nope'}' does not exist; train one with `medpfgm train --run DIR`"]


@pytest.mark.parametrize(
    "method,extra,solver,steps,nfe",
    [("pfgmpp", ["--aug-dim", "inf"], "heun", 3, 5), ("pfgmpp", [], "rk45", 0, None), ("ddpm", [], "ddim", 4, 4), ("ddpm", [], "ddpm", 5, 5)],
)
def test_each_method_trains_and_synthesizes(capsys, tmp_path, data_root, method, extra, solver, steps, nfe):
    from tests.conftest import write_tiny_recipe

    recipe = write_tiny_recipe(tmp_path / "tiny.toml", method)
    code, _, err = run_cli(capsys, "train", "--recipe", str(recipe), "--run", str(tmp_path / "run"), "--quiet", "--steps", "2", *extra)
    assert code == 0, err
    args = ["--solver", solver] + (["--steps", str(steps)] if steps else ["--rtol", "1e-2", "--atol", "1e-2"])
    code, _, err = run_cli(capsys, "synthesize", "--run", str(tmp_path / "run"), "-n", "3", "--class", "2", "--out", str(tmp_path / "s.npz"), "--quiet", *args)
    assert code == 0, err
    with np.load(tmp_path / "s.npz") as f:
        assert f["images"].shape == (3, 28, 28, 3) and f["labels"].tolist() == [2, 2, 2]
        assert nfe is None or f["nfe"].tolist() == [nfe]
    if extra:
        import json

        assert json.loads((tmp_path / "run" / "config.json").read_text())["pfgmpp"]["aug_dim"] == "inf"


@pytest.mark.parametrize(
    "args,fragments",
    [
        (["--method", "pfgmpp", "--aug-dim", "0"], ["aug_dim (D) must be 1, an integer >= 2, or inf; got '0'"]),
        (["--method", "pfgmpp", "--aug-dim", "2.5"], ["got '2.5'"]),
        (["--method", "pfgm", "--aug-dim", "128"], ["--aug-dim applies to method pfgmpp only"]),
        (["--method", "ddpm", "--field-batch", "64"], ["--field-batch applies to method pfgm only"]),
        (["--method", "vae"], ["unknown method 'vae'; choose one of: pfgm, pfgmpp, ddpm"]),
    ],
)
def test_bad_method_arguments(capsys, args, fragments):
    code, _, err = run_cli(capsys, "train", *args)
    assert_one_line_error(code, err, *fragments)


def test_ddpm_run_refuses_ode_solvers(capsys, tmp_path, data_root):
    from tests.conftest import write_tiny_recipe

    recipe = write_tiny_recipe(tmp_path / "tiny.toml", "ddpm")
    assert run_cli(capsys, "train", "--recipe", str(recipe), "--run", str(tmp_path / "run"), "--quiet", "--steps", "1")[0] == 0
    code, _, err = run_cli(capsys, "synthesize", "--run", str(tmp_path / "run"), "-n", "2", "--solver", "heun")
    assert_one_line_error(code, err, "solver 'heun' is not available for ddpm; choose one of: ddpm, ddim")


@pytest.mark.parametrize("signame,status", [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_stop_signal_saves_a_checkpoint_and_resume_continues(tmp_path, tiny_recipe, data_root, signame, status):
    import json
    import os
    import signal
    import time

    run = tmp_path / "run"
    env = {**os.environ, "MEDPFGM_DATA": str(data_root)}
    cmd = [sys.executable, "-m", "medpfgm.cli", "train", "--recipe", str(tiny_recipe), "--run", str(run), "--steps", "100000", "--quiet"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 600
    while time.time() < deadline and not (run / "log.jsonl").is_file():
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(getattr(signal, signame))
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == status  # 128 + the signal's number, as shells report it
    assert len(err.strip().splitlines()) == 1 and "interrupted at step" in err and "--resume" in err
    step = int(err.split("interrupted at step ")[1].split(";")[0])
    saved = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert saved["step"] == step >= 1
    assert json.loads((run / "log.jsonl").read_text().splitlines()[-1])["step"] <= step
    code = main(["train", "--run", str(run), "--resume", "--steps", str(step + 2), "--quiet"])
    assert code == 0
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["step"] == step + 2


def test_without_run_the_default_folder_is_used_or_the_found_ones_are_listed(capsys, trained_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "synthesize", "-n", "2", "--quiet")  # the default method: PFGM++ (D = 128 in its recipe)
    assert_one_line_error(code, err, "no --run given", "runs/pfgmpp_d128_bloodmnist_28", "no run folder found")
    shutil.copytree(trained_run, tmp_path / "runs" / "mine", ignore=shutil.ignore_patterns("samples"))
    code, _, err = run_cli(capsys, "evaluate", "--method", "ddpm", "--quiet")
    assert_one_line_error(code, err, "runs/ddpm_bloodmnist_28", "run folders found: runs/mine")
    shutil.copytree(trained_run, tmp_path / "runs" / "pfgm_bloodmnist_28", ignore=shutil.ignore_patterns("samples"))
    code, stdout, err = run_cli(capsys, "synthesize", "--method", "pfgm", "-n", "2", "--quiet", "--solver", "euler", "--steps", "2")
    assert code == 0, err
    assert "samples/pfgm_bloodmnist_28/all_euler_n2_seed0.npz" in stdout


@pytest.mark.parametrize(
    "args,fragments",
    [
        (["synthesize", "--run", "README.md", "-n", "2"], ["'README.md' is a file, not a run folder"]),
        (["synthesize", "--run", "RUN", "-n", "2", "--out", "/proc/x.npz"], ["cannot write --out '/proc/x.npz'"]),
        (["synthesize", "--run", "RUN", "-n", "2", "--class", "9"], ["class 9 is out of range"]),
        (["evaluate", "--run", "RUN", "--metrics", "fdi"], ["unknown metric 'fdi'"]),
        (["evaluate", "--run", "RUN", "-n", "5"], ["-n 5 is too few to score", "at least 10"]),
        (["evaluate", "--run", "RUN", "--out", "/proc/x.json"], ["cannot write --out '/proc/x.json'"]),
        (["train", "--dataset", "pathmnist"], ["unknown dataset 'pathmnist'"]),
        (["train", "--device", "tpu"], ["unknown device 'tpu'"]),
        (["classify", "--out", "/proc/clf"], ["cannot write --out '/proc/clf/classifier.json'"]),
        (["classify", "--out", "x", "--train-file", "nope.npz"], ["training file 'nope.npz' does not exist"]),
        (["classify", "--out", "x", "--monitor", "loss"], ["--monitor loss needs --patience"]),
        (["longtail", "--ratio", "0.5", "--out", "x"], ["--ratio must be at least 1"]),
        (["augment", "--run", "RUN", "--out", "/proc/fill.npz"], ["cannot write --out '/proc/fill.npz'"]),
        (["augment", "--run", "README.md", "--out", "fill.npz"], ["'README.md' is a file, not a run folder"]),
        (["report", "--dataset", "chestmnist"], ["unknown dataset 'chestmnist'"]),
    ],
)
def test_cheap_mistakes_are_refused_before_torch_loads(trained_run, args, fragments):
    """Run in a fresh interpreter: the error comes back and torch was never imported (seconds saved)."""
    args = [str(trained_run) if a == "RUN" else a for a in args]
    code = f"import sys; from medpfgm.cli import main; rc = main({args!r}); print('torch loaded' if 'torch' in sys.modules else 'torch not loaded'); sys.exit(rc)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2
    assert_one_line_error(done.returncode, done.stderr, *fragments)
    assert done.stdout.strip() == "torch not loaded"


def test_messages_are_cut_at_word_boundaries():
    from medpfgm.errors import shorten

    name = "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)"
    assert shorten(name, 28) == "immature granulocytes…"
    assert shorten("Ran out of input while reading the archive at byte 123456", 30) == "Ran out of input while…"
    assert shorten("short", 30) == "short" and shorten("first line\nsecond", 30) == "first line"
    for width in range(10, 70):  # from the first word's length on, no cut falls inside a word
        cut = shorten(name, width)
        assert len(cut) <= width and (cut == name or name.startswith(cut[:-1]) and not name[len(cut) - 1].isalnum())


@pytest.mark.parametrize("env,expected", [({}, "PASSIVE"), ({"OMP_WAIT_POLICY": "ACTIVE"}, "ACTIVE"), ({"MEDPFGM_OMP_DEFAULTS": "0"}, "unset")])
def test_openmp_waits_passively_unless_the_user_says_otherwise(env, expected):
    import os

    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "MEDPFGM_OMP_DEFAULTS")}
    code = "import os, medpfgm.cli; print(os.environ.get('OMP_WAIT_POLICY', 'unset'))"
    done = subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == expected
