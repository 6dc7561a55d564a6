"""Corrupt every kind of file medpfgm reads from users and count how each reader answers.

    python benchmarks/fuzz_readers.py [--random 40] [--seed 0] [--out reports/reliability/fuzz.json]

Readers: MedMNIST data files (`load_split`), samples and augmented files (`read_image_file`,
`read_training_file`), checkpoints (`load_run`), recipes (`load_recipe`), evaluation results (the report
builder). Each gets hand-built corrupt cases (truncated, random bytes, empty, wrong keys, dtypes,
shapes, NaN, huge or negative values, pickled objects, a checkpoint whose pickle would run code) and
``--random`` seeded random byte flips and truncations of a valid file. A case passes when the reader
either refuses it with a one-line `MedpfgmError` naming the file, or accepts it and what it returns is
valid (finite weights, labels in range). Anything else (another exception, a silent NaN) is a crash.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import random
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medpfgm.augment import read_training_file  # noqa: E402
from medpfgm.config import load_recipe  # noqa: E402
from medpfgm.data import load_split, read_image_file  # noqa: E402
from medpfgm.errors import MedpfgmError  # noqa: E402
from medpfgm.evaluate.pipeline import machine  # noqa: E402
from medpfgm.evaluate.report import build_report  # noqa: E402
from medpfgm.io import write_json  # noqa: E402
from medpfgm.run import load_run  # noqa: E402

Case = tuple[str, Callable[[Path], None]]  # (name, write the corrupt file at this path)


def npz_writer(**arrays) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)

    return write


def bytes_writer(data: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data)


def medmnist_arrays(n: int = 12, k: int = 8) -> dict:
    rng = np.random.default_rng(0)
    out = {}
    for split in ("train", "val", "test"):
        out[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28, 3), dtype=np.uint8)
        out[f"{split}_labels"] = (np.arange(n) % k).astype(np.uint8)[:, None]
    return out


def array_cases(base: dict, images_key: str, labels_key: str) -> list[Case]:
    """Wrong keys, dtypes, shapes and values of an image file's arrays."""
    n = len(base[labels_key])
    changed = lambda **kw: npz_writer(**{**base, **kw})  # noqa: E731
    dropped = lambda key: npz_writer(**{k: v for k, v in base.items() if k != key})  # noqa: E731
    return [
        ("no images array", dropped(images_key)),
        ("no labels array", dropped(labels_key)),
        ("float images with NaN", changed(**{images_key: np.full(base[images_key].shape, np.nan, np.float32)})),
        ("int64 images, huge values", changed(**{images_key: np.full(base[images_key].shape, 2**40, np.int64)})),
        ("images of 2 dimensions", changed(**{images_key: np.zeros((n, 28 * 28 * 3), np.uint8)})),
        ("images of 5 dimensions", changed(**{images_key: np.zeros((n, 1, 28, 28, 3), np.uint8)})),
        ("fewer labels than images", changed(**{labels_key: base[labels_key][: n // 2]})),
        ("labels huge", changed(**{labels_key: np.full((n, 1), 10**9, np.int64)})),
        ("labels negative", changed(**{labels_key: np.full((n, 1), -3, np.int64)})),
        ("labels NaN (float)", changed(**{labels_key: np.full((n, 1), np.nan)})),
        ("labels as strings", changed(**{labels_key: np.array(["a"] * n)})),
        ("labels as pickled objects", changed(**{labels_key: np.array([object()] * n, dtype=object)})),
        ("no images at all", changed(**{images_key: base[images_key][:0], labels_key: base[labels_key][:0]})),
    ]


def damage_cases(valid: bytes, count: int, rng: random.Random) -> list[Case]:
    """Truncations, flipped bytes, an empty file and random bytes, made from a valid file's bytes."""
    cases: list[Case] = [("empty file", bytes_writer(b"")), ("random bytes", bytes_writer(rng.randbytes(4096)))]
    for i in range(count):
        if i % 2:
            cut = rng.randrange(1, len(valid))
            cases.append((f"truncated at byte {cut}", bytes_writer(valid[:cut])))
        else:
            data = bytearray(valid)
            for _ in range(rng.randrange(1, 9)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            cases.append((f"flipped bytes #{i}", bytes_writer(bytes(data))))
    return cases


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/medpfgm_fuzz_pwned",))


def checkpoint_cases(valid: Path) -> list[Case]:
    state = torch.load(valid, weights_only=True)

    def saved(obj) -> Callable[[Path], None]:
        return lambda path: torch.save(obj, path)

    ema = state["ema"]
    first = next(k for k, v in ema.items() if v.is_floating_point())
    evil = io.BytesIO()
    pickle.dump({"model": _Evil(), "config": {}}, evil)
    return [
        ("no config entry", saved({k: v for k, v in state.items() if k != "config"})),
        ("no ema entry", saved({k: v for k, v in state.items() if k != "ema"})),
        ("NaN in the EMA weights", saved({**state, "ema": {**ema, first: torch.full_like(ema[first], float("nan"))}})),
        ("a weight of the wrong shape", saved({**state, "ema": {**ema, first: torch.zeros(3)}})),
        ("config of another method", saved({**state, "config": {**state["config"], "method": "gan"}})),
        ("config with an unknown key", saved({**state, "config": {**state["config"], "oops": 1}})),
        ("step is a string", saved({**state, "step": "many"})),
        ("a list, not a dict", saved([1, 2, 3])),
        ("a pickle that runs code", bytes_writer(evil.getvalue())),
    ]


RECIPE_LINES = {
    "steps = -5": ("[train]", "steps = -5"),
    "steps = 0": ("[train]", "steps = 0"),
    "steps = 1e30": ("[train]", "steps = 1e30"),
    "steps = 'many'": ("[train]", 'steps = "many"'),
    "lr = nan": ("[train]", "lr = nan"),
    "lr = -1": ("[train]", "lr = -1.0"),
    "batch_size = 0": ("[train]", "batch_size = 0"),
    "ema_decay = 1.5": ("[train]", "ema_decay = 1.5"),
    "channels = 'x'": ("[net]", 'channels = "x"'),
    "channels = []": ("[net]", "channels = []"),
    "field_batch = -1": ("[pfgm]", "field_batch = -1"),
    "sigma = inf": ("[pfgm]", "sigma = inf"),
    "aug_dim = 0": ("[pfgmpp]", "aug_dim = 0"),
    "aug_dim = -inf": ("[pfgmpp]", "aug_dim = -inf"),
    "solver = 'magic'": ("[sample]", 'solver = "magic"'),
    "sample steps = 0": ("[sample]", "steps = 0"),
    "net = 3 (not a table)": (None, "net = 3"),
}


def recipe_cases(valid_text: str) -> list[Case]:
    def with_line(table: str | None, line: str) -> Callable[[Path], None]:
        if table is None:
            text = line + "\n" + valid_text.replace("[net]", "[net_unused]", 1)
        else:
            lines = [ln for ln in valid_text.splitlines() if not (ln.split("=")[0].strip() == line.split("=")[0].strip() and "=" in ln)]
            text = "\n".join(lines).replace(table, f"{table}\n{line}", 1)
            text = text if table in valid_text else text + f"\n{table}\n{line}\n"
        return lambda path: path.write_text(text)

    cases = [(name, with_line(*spec)) for name, spec in RECIPE_LINES.items()]
    cases += [("not TOML", bytes_writer(b"method = = pfgm\n[[[")), ("method = 'gan'", lambda p: p.write_text(valid_text.replace('method = "pfgm"', 'method = "gan"')))]
    return cases


def result_cases(valid: dict) -> list[Case]:
    def dumped(obj) -> Callable[[Path], None]:
        return lambda path: path.write_text(json.dumps(obj))

    return [
        ("a list, not an object", dumped([1, 2])),
        ("no subject", dumped({k: v for k, v in valid.items() if k != "subject"})),
        ("no score", dumped({k: v for k, v in valid.items() if k != "score"})),
        ("no floor", dumped({k: v for k, v in valid.items() if k != "floor"})),
        ("subject without a label", dumped({**valid, "subject": {k: v for k, v in valid["subject"].items() if k != "label"}})),
        ("score is a string", dumped({**valid, "score": "great"})),
        ("domain FD is a string", dumped({**valid, "score": {**valid["score"], "domain": {**valid["score"]["domain"], "fd": "low"}}})),
        ("setup without counts", dumped({**valid, "setup": {k: v for k, v in valid["setup"].items() if k != "counts"}})),
        ("NaN in a score", lambda p: p.write_text(json.dumps(valid).replace(f'"mean": {valid["score"]["domain"]["fd"]["mean"]}', '"mean": NaN', 1))),
    ]


def run_case(read: Callable[[Path], object], check: Callable[[object], bool], path: Path, name: str) -> tuple[str, str]:
    """('refused'|'accepted'|'crash', detail) of one corrupt file."""
    try:
        value = read(path)
    except MedpfgmError as exc:
        text = str(exc)
        if "\n" in text or path.name not in text:
            return "crash", f"{name}: error is not one line naming the file: {text!r}"
        return "refused", text
    except Exception as exc:  # noqa: BLE001 - the point is to catch what escapes
        return "crash", f"{name}: {type(exc).__name__}: {exc}"[:300]
    try:
        valid = bool(check(value))
    except Exception:  # noqa: BLE001 - e.g. an empty array: accepted but not usable
        valid = False
    return ("accepted", name) if valid else ("crash", f"{name}: accepted but invalid")


def fuzz(work: Path, random_cases: int, seed: int, data_root: Path) -> dict:
    rng = random.Random(seed)
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}

    def record(kind: str, cases: list[Case], read, check, filename: str) -> None:
        counts = {"cases": 0, "refused": 0, "accepted": 0, "crash": 0, "crashes": []}
        for name, write in cases:
            folder = Path(tempfile.mkdtemp(dir=work))
            path = folder / filename
            write(path)
            outcome, detail = run_case(read, check, path, name)
            counts["cases"] += 1
            counts[outcome] += 1
            if outcome == "crash":
                counts["crashes"].append(detail)
            shutil.rmtree(folder)
        results[kind] = counts
        print(f"{kind}: {counts['cases']} cases, {counts['refused']} refused in one line, {counts['accepted']} accepted (valid), {counts['crash']} crashes", flush=True)

    # MedMNIST data files: read as the training split of bloodmnist 28 px, without the MD5 check
    base = medmnist_arrays()
    valid_npz = work / "valid.npz"
    npz_writer(**base)(valid_npz)
    labels_ok = lambda split: split.labels.min() >= 0 and split.labels.max() < 8 and len(split.images) == len(split.labels) > 0  # noqa: E731
    record("MedMNIST data file", array_cases(base, "train_images", "train_labels") + damage_cases(valid_npz.read_bytes(), random_cases, rng),
           lambda p: load_split("bloodmnist", 28, "train", p.parent, download=False, verify=False), labels_ok, "bloodmnist.npz")  # fmt: skip
    # samples files (synthesize) and augmented files (augment)
    samples = {"images": base["train_images"], "labels": base["train_labels"].reshape(-1).astype(np.int64), "nfe": np.array([4])}
    valid_samples = work / "samples.npz"
    npz_writer(**samples)(valid_samples)
    images_ok = lambda v: v[0].dtype == np.uint8 and v[0].ndim == 4 and len(v[0]) == len(v[1]) == len(v[2])  # noqa: E731
    record("samples file", array_cases(samples, "images", "labels") + damage_cases(valid_samples.read_bytes(), random_cases, rng), read_image_file, images_ok, "samples.npz")
    augmented = {**base, "train_synthetic": np.zeros(len(base["train_labels"]), bool)}
    mask_cases = [("mask of the wrong length", npz_writer(**{**augmented, "train_synthetic": np.zeros(3, bool)})),
                  ("mask of floats with NaN", npz_writer(**{**augmented, "train_synthetic": np.full(12, np.nan)}))]  # fmt: skip
    record("augmented file", mask_cases + array_cases(augmented, "train_images", "train_labels"), read_training_file, images_ok, "fill.npz")
    # checkpoints: a tiny trained run
    from medpfgm.cli import main

    recipe = work / "tiny.toml"
    recipe.write_text((ROOT / "recipes" / "tiny.toml").read_text())
    os.environ["MEDPFGM_DATA"] = str(data_root)
    assert main(["train", "--recipe", str(recipe), "--run", str(work / "run"), "--quiet", "--device", "cpu"]) == 0
    valid_ckpt = work / "run" / "checkpoints" / "last.pt"

    def reader(name: str, drop: str):
        """Load a copy of the run whose file ``name`` is the case's (and whose ``drop`` is removed, so the
        file under test is the one read)."""

        def read(path: Path):
            run = work / f"run_{path.parent.name}"
            shutil.copytree(work / "run", run, ignore=shutil.ignore_patterns(name, drop))
            shutil.copy(path, run / ("checkpoints" if name == "last.pt" else "") / name)
            try:
                return load_run(run)
            finally:
                shutil.rmtree(run)

        return read

    finite = lambda run: all(torch.isfinite(p).all() for p in run.net.parameters())  # noqa: E731
    record("checkpoint", checkpoint_cases(valid_ckpt) + damage_cases(valid_ckpt.read_bytes(), random_cases, rng),
           reader("last.pt", "ema.safetensors"), finite, "last.pt")  # fmt: skip
    valid_model = work / "run" / "ema.safetensors"
    record("model file", damage_cases(valid_model.read_bytes(), random_cases, rng), reader("ema.safetensors", "checkpoints"), finite, "ema.safetensors")
    pwned = Path("/tmp/medpfgm_fuzz_pwned")
    if pwned.exists():
        results["checkpoint"]["crash"] += 1
        results["checkpoint"]["crashes"].append("a pickled checkpoint ran code")
        pwned.unlink()
    # recipes
    valid_recipe = (ROOT / "recipes" / "pfgm" / "bloodmnist_28.toml").read_text()
    record("recipe", recipe_cases(valid_recipe), load_recipe, lambda cfg: cfg.train.steps > 0 and cfg.train.lr > 0, "recipe.toml")
    # evaluation results: a report folder with one committed result file swapped for a corrupt one
    valid_result = json.loads((ROOT / "reports" / "bloodmnist_28" / "evaluations" / "pfgmpp_d128_heun18.json").read_text())

    def read_result(path: Path):
        folder = path.parent / "bloodmnist_28"
        (folder / "evaluations").mkdir(parents=True)
        shutil.copy(ROOT / "reports" / "bloodmnist_28" / "evaluations" / "pfgm_euler10.json", folder / "evaluations")
        shutil.copy(path, folder / "evaluations" / path.name)
        return build_report(folder)

    record("evaluation result", result_cases(valid_result) + damage_cases(json.dumps(valid_result).encode(), random_cases // 2, rng),
           read_result, lambda page: Path(page).is_file(), "pfgmpp_d128_heun18.json")  # fmt: skip
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--random", type=int, default=40, help="random truncations and byte flips per binary reader")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "medpfgm_fuzz")
    p.add_argument("--data-root", type=Path, default=Path(os.environ.get("MEDPFGM_DATA", ROOT.parent / "shared" / "data")))
    p.add_argument("--out", type=Path, default=ROOT / "reports" / "reliability" / "fuzz.json")
    args = p.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    results = fuzz(args.work, args.random, args.seed, args.data_root)
    total = {k: sum(r[k] for r in results.values()) for k in ("cases", "refused", "accepted", "crash")}
    write_json(args.out, {"total": total, "readers": results, "machine": machine(), "command": f"python benchmarks/fuzz_readers.py --random {args.random} --seed {args.seed}"})
    print(f"{total['cases']} cases: {total['refused']} refused in one line naming the file, {total['accepted']} accepted and valid, {total['crash']} crashes; wrote {args.out}")
    sys.exit(1 if total["crash"] else 0)


if __name__ == "__main__":
    main()
