"""The repository travels: a clone (or a GPU machine's 64 MB copy) gets every committed model, small.

A committed run keeps its float16 model file, config, log and data record; training states stay on the
machine that trained them (.gitignore) and are in history for the runs committed before model files.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TREE_LIMIT = 64 * 2**20  # what the GPU machine may be sent, and what a clone should cost
FILE_LIMIT = 5 * 2**20


def tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [Path(p) for p in out.decode().split("\0") if p and (ROOT / p).is_file()]


def test_tracked_tree_is_small_enough_to_travel():
    files = tracked_files()
    total = sum((ROOT / p).stat().st_size for p in files)
    assert total < TREE_LIMIT, f"tracked tree is {total / 2**20:.1f} MiB (limit 64 MiB)"
    big = [f"{p} ({(ROOT / p).stat().st_size / 2**20:.1f} MiB)" for p in files if (ROOT / p).stat().st_size > FILE_LIMIT]
    assert not big, f"tracked files over 5 MiB: {big}"
    states = [str(p) for p in files if "checkpoints" in p.parts]
    assert not states, f"training states are not committed (export a model file instead): {states}"


def test_every_committed_run_samples_from_its_float16_model_file():
    from medpfgm.run import load_run

    runs = sorted({(ROOT / p).parent for p in tracked_files() if p.name == "ema.safetensors"})
    assert len(runs) >= 13  # the report and augmentation runs
    for run_dir in runs:
        run = load_run(run_dir)  # hash-checked; refuses NaN weights
        assert run.step > 0, run_dir
    from safetensors import safe_open

    for run_dir in runs:
        with safe_open(str(run_dir / "ema.safetensors"), framework="pt") as fh:
            meta = fh.metadata()
        assert meta["dtype"] == "float16", run_dir
        assert json.loads(meta["config"]) == json.loads((run_dir / "config.json").read_text()), run_dir
