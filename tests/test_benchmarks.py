"""The augmentation benchmark's own logic: its rare classes, its verdicts, its guard on stale fills."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from medpfgm.config import default_recipe, load_recipe

ROOT = Path(__file__).resolve().parents[1]


def load_benchmark(name: str):
    """A script of benchmarks/ as a module (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("augmentation")


@pytest.fixture(scope="module")
def page(bench):
    return sys.modules["augmentation_page"]  # the page module the benchmark imports


def test_tail_classes_are_those_below_the_median(page):
    assert page.tail_classes([486, 128, 206, 194, 66]) == [1, 4]
    assert page.tail_classes([100, 100, 100]) == []


def test_verdicts_call_gains_only_beyond_the_seed_spread(page):
    rows = []
    for variant, (mean, wiggle) in {"real": (0.28, 0.01), "resample": (0.30, 0.01), "fill_big": (0.40, 0.01), "fill_noise": (0.31, 0.02), "tstr_big": (0.21, 0.01)}.items():
        for seed, sign in enumerate((-1, 0, 1)):
            value = mean + sign * wiggle
            rows.append({"variant": variant, "seed": seed, "balanced_accuracy": value, "macro_f1": value, "tail_recall": 0.5 - (value - 0.3)})
    summary = pd.DataFrame(rows).groupby("variant", sort=False)[["balanced_accuracy", "macro_f1", "tail_recall"]].agg(["mean", "std"])
    big, noise, tstr = page.verdicts(summary, num_classes=5)
    assert big.startswith("- **fill_big**") and "balanced accuracy +0.100 vs resample (gain)" in big and "tail recall -0.100 vs resample (loss)" in big
    assert "balanced accuracy +0.010 vs resample (within the seed spread)" in noise
    assert "classical" not in big  # a baseline that was not run is not compared
    assert tstr == "- **tstr_big** (train on synthetic only): balanced accuracy 0.210 against chance 0.200, real-only 0.280."


def test_a_fill_made_otherwise_is_refused(bench, tmp_path):
    fill = tmp_path / "fill_x.npz"
    fill.with_name(fill.name + ".provenance.json").write_text(json.dumps({"run": "runs/a", "target": "balanced", "solver": "heun", "steps": 18}))
    bench.check_fill(fill, "runs/a", "balanced", {"solver": "heun", "steps": 18})  # the same: accepted
    with pytest.raises(SystemExit, match="target 'balanced' \\(asked '500'\\)"):
        bench.check_fill(fill, "runs/a", "500", {"solver": "heun", "steps": 18})
    with pytest.raises(SystemExit, match="steps 18 \\(asked 35\\)"):
        bench.check_fill(fill, "runs/a", "balanced", {"solver": "heun", "steps": 35})
    made_elsewhere = tmp_path / "fill_y.npz"
    bench.check_fill(made_elsewhere, "runs/a", "balanced", {})  # not made yet: nothing to check
    made_elsewhere.write_bytes(b"")
    with pytest.raises(SystemExit, match="fill_y.npz has no provenance record"):
        bench.check_fill(made_elsewhere, "runs/a", "balanced", {})


def test_fill_variants_name_their_arguments(bench, tmp_path):
    assert bench.fill_variant("frac25", tmp_path) == (["--fill-fraction", "0.25"], [], {"fill_fraction": 0.25})
    assert bench.fill_variant("weight0.5", tmp_path) == ([], ["--synthetic-weight", "0.5"], {})
    assert bench.fill_variant("classical", tmp_path) == ([], ["--balanced", "--augment"], {})
    augment_args, _, _ = bench.fill_variant("filter0.8", tmp_path)
    assert augment_args == ["--filter", str(bench.classifier_dir(tmp_path, "filter_real", 0)), "--min-confidence", "0.8"]  # a real-only classifier of its own
    assert bench.fill_variant("guide0.5", tmp_path) == (["--guidance", "0.5"], [], {"guidance": 0.5})  # its own fill file
    with pytest.raises(SystemExit, match="unknown fill variant 'more'"):
        bench.fill_variant("more", tmp_path)


def test_converged_fills_are_compared_with_converged_baselines(page):
    rows = [{"variant": v, "seed": s, "balanced_accuracy": m + d, "macro_f1": m + d, "tail_recall": m + d}
            for v, m in {"resample": 0.5, "resample_conv": 0.7, "fill_x": 0.6, "fill_x_conv": 0.6}.items() for s, d in enumerate((-0.01, 0.0, 0.01))]  # fmt: skip
    summary = pd.DataFrame(rows).groupby("variant", sort=False)[["balanced_accuracy", "macro_f1", "tail_recall"]].agg(["mean", "std"])
    plain, conv = page.verdicts(summary, num_classes=5)
    assert "+0.100 vs resample (gain)" in plain and "-0.100 vs resample_conv (loss)" in conv
    one = summary.copy()
    one.loc["fill_x_conv", ("balanced_accuracy", "std")] = np.nan  # one seed trained so far
    assert "-0.100 vs resample_conv (one seed, no verdict)" in page.verdicts(one, num_classes=5)[1]
    loss_rows = [r | {"variant": r["variant"] + "loss", "balanced_accuracy": r["balanced_accuracy"] + 0.05} for r in rows if r["variant"].endswith("_conv")]
    summary = pd.DataFrame(rows + loss_rows).groupby("variant", sort=False)[["balanced_accuracy", "macro_f1", "tail_recall"]].agg(["mean", "std"])
    by_loss = page.verdicts(summary, num_classes=5)[2]  # a twin stopped on the validation loss: against baselines stopped alike
    assert by_loss.startswith("- **fill_x_convloss**") and "balanced accuracy -0.100 vs resample_convloss (loss)" in by_loss and "vs resample_conv " not in by_loss


def test_converged_twins_follow_converged_vary_and_converged_only(bench):
    unvaried = {"fill_old", "tstr_old"}
    assert bench.has_converged_twin("classical", 5, unvaried, None) and bench.has_converged_twin("tstr_new", 5, unvaried, None)
    assert not bench.has_converged_twin("classical", None, unvaried, None)  # no --converged
    assert not bench.has_converged_twin("fill_old", 5, unvaried, None)  # outside --vary
    only = {"classical", "fill_new"}
    assert [v for v in ("real", "classical", "fill_new", "tstr_new", "fill_old") if bench.has_converged_twin(v, 5, unvaried, only)] == ["classical", "fill_new"]
    # a fill file is remade only for the classifiers that will be trained on it: no twin outside --converged-only
    twin = lambda v: bench.has_converged_twin(v, 5, unvaried, only)  # noqa: E731
    assert bench.classifiers_of(["fill_new", "tstr_new"], twin) == ["fill_new", "tstr_new", "fill_new_conv"]
    assert bench.classifiers_of(["fill_new"], lambda v: bench.has_converged_twin(v, 5, unvaried, {"classical"})) == ["fill_new"]
    assert bench.classifiers_of(["fill_new", "tstr_new"], twin, ("_conv", "_convloss")) == ["fill_new", "tstr_new", "fill_new_conv", "fill_new_convloss"]


def test_a_fill_argument_names_a_run_and_optionally_its_sampler(bench, tmp_path):
    assert bench.parse_fill("p=runs/a@heun:18") == ("p", "runs/a", {"solver": "heun", "steps": 18}, [])
    assert bench.parse_fill("p=runs/a@rk45") == ("p", "runs/a", {"solver": "rk45"}, [])
    assert bench.parse_fill("p=runs/a") == ("p", "runs/a", {}, [])
    assert bench.sampler_args({"solver": "heun", "steps": 18}) == ["--solver", "heun", "--steps", "18"]
    bf16 = bench.parse_fill("p=runs/a@heun:18:bf16")
    assert bf16 == ("p", "runs/a", {"solver": "heun", "steps": 18, "precision": "bfloat16"}, [])
    assert bench.sampler_args(bf16[2]) == ["--solver", "heun", "--steps", "18", "--bf16"]
    guided = bench.parse_fill("g=runs/a@heun:18:bf16:guide1:frac50")  # a fill file of its own making
    assert guided[2] == bf16[2] and guided[3] == ["guide1", "frac50"]
    assert bench.own_variants(guided[3], tmp_path) == (["--guidance", "1", "--fill-fraction", "0.5"], [], {"guidance": 1.0, "fill_fraction": 0.5})
    assert bench.own_variants([], tmp_path) == ([], [], {})
    for bad in ("runs/a@heun:18", "p=", "p=runs/a@heun:many", "p=runs/a@heun:18:bf16:bf16", "p=runs/a@heun:18:weight0.5", "p=runs/a@heun:18::guide1"):
        with pytest.raises(SystemExit, match="--fill wants NAME=RUN"):
            bench.parse_fill(bad)
    with pytest.raises(SystemExit, match="unknown fill variant 'fp8'"):
        bench.own_variants(bench.parse_fill("p=runs/a@heun:18:fp8")[3], tmp_path)


def test_a_fill_is_made_only_while_a_classifier_needs_it(bench, tmp_path):
    assert bench.fill_needed(tmp_path, "x", [0, 1])
    for kind in ("fill", "tstr"):
        for seed in (0, 1):
            folder = bench.classifier_dir(tmp_path, f"{kind}_x", seed)
            folder.mkdir(parents=True)
            if (kind, seed) != ("tstr", 1):
                (folder / "classifier.json").write_text("{}")
    assert bench.fill_needed(tmp_path, "x", [0, 1])  # one train-on-synthetic classifier still to train
    (bench.classifier_dir(tmp_path, "tstr_x", 1) / "classifier.json").write_text("{}")
    assert not bench.fill_needed(tmp_path, "x", [0, 1])
    assert bench.fill_needed(tmp_path, "x", [0, 1, 2])



def test_a_fill_models_score_is_found_by_run_sampler_and_guidance(bench, tmp_path):
    folder = tmp_path / "quality" / "bloodmnist_28" / "evaluations"
    folder.mkdir(parents=True)
    for stem, guidance in (("plain", 0.0), ("guided", 0.5)):
        subject = {"run": "runs/a", "solver": "heun", "steps": 18, "guidance": guidance}
        (folder / f"{stem}.json").write_text(json.dumps({"subject": subject, "tag": stem}))
    (folder / "fill_x_images.json").write_text(json.dumps({"subject": {"samples": "fill_x_images.npz"}}))  # a fill's own images: no run
    assert bench.quality_record(tmp_path, "runs/a", {"solver": "heun", "steps": 18}, 0.0)["tag"] == "plain"
    assert bench.quality_record(tmp_path, "runs/a/", {}, 0.5)["tag"] == "guided"  # the recipe's sampler: any solver
    for run, sampler, guidance in (("runs/b", {}, 0.0), ("runs/a", {"steps": 10}, 0.0), ("runs/a", {"solver": "euler"}, 0.0), ("runs/a", {}, 2.0)):
        assert bench.quality_record(tmp_path, run, sampler, guidance) is None

def test_a_fills_cost_is_its_models_training_to_the_fill_step_and_its_drawing(page, tmp_path):
    from medpfgm.run import training_seconds

    run = tmp_path / "run"
    run.mkdir()
    assert training_seconds(run) is None  # no log: no claim
    (run / "log.jsonl").write_text("\n".join(json.dumps({"step": s, "train_seconds": 1800.0 * s / 10}) for s in (10, 20, 30)))
    assert training_seconds(run) == 5400.0 and training_seconds(run, 25) == 3600.0
    record = {"subject": {"seconds_per_image": 0.36}}
    made = {"run": str(run), "run_step": 20, "synthetic": 1000}
    (tmp_path / "fill_a.npz.provenance.json").write_text(json.dumps(made | {"sampling_seconds": 720.0}))
    (tmp_path / "fill_b.npz.provenance.json").write_text(json.dumps(made))  # made before sampling time was recorded
    (tmp_path / "fill_c.npz.provenance.json").write_text(json.dumps(made | {"filter": {"drawn": [2000, 1000], "kept": [600, 400]}}))
    assert page.fill_cost(tmp_path, "fill_a", record) == "1.0 + 0.20"
    assert page.fill_cost(tmp_path, "fill_b", record) == "1.0 + ≈0.10"  # 1,000 images at 0.36 s
    assert page.fill_cost(tmp_path, "fill_c", record) == "1.0 + ≈0.30"  # a filter pays for what it drew
    assert page.fill_cost(tmp_path, "fill_none", record) == "– + –"


def test_the_fill_grid_draws_the_synthetic_rows_only(bench, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(8), 5)
    images = rng.integers(0, 256, (len(labels), 28, 28, 3), dtype=np.uint8)
    heights = []
    for n_synthetic_classes in (2, 6):
        path = tmp_path / f"fill_{n_synthetic_classes}.npz"
        np.savez(path, train_images=images, train_labels=labels[:, None], train_synthetic=labels < n_synthetic_classes)
        heights.append(Image.open(bench.draw_fill(path, "bloodmnist", "t")).size[1])
    assert heights[1] > 2 * heights[0]  # rows for the synthetic classes, none for the real-only ones


@pytest.fixture(scope="module")
def fidelity():
    return load_benchmark("field_fidelity")


def test_field_fidelity_of_the_exact_field_is_perfect(fidelity, data_root):
    """With the empirical field itself as the network, the diagnostic must report agreement 1 at
    every step (above the small-z switch) and paths that end on the charges."""
    from medpfgm.config import PFGMConfig
    from medpfgm.data import load_split, to_unit_range
    from medpfgm.methods.pfgm import PFGM, resolve_scales
    from tests.conftest import OracleNet

    split = load_split("bloodmnist", 28, "train", data_root)
    charges = to_unit_range(split.images[:12]).double().flatten(1)
    charge_labels = torch.as_tensor(split.labels[:12])
    cfg = resolve_scales(PFGMConfig(z_exp=0.0), float(charges.norm(dim=1).mean()), charges.shape[1])
    method = PFGM(cfg, (3, 28, 28), batch_size=1)
    labels = charge_labels[:4]
    x = method.prior(4, torch.Generator().manual_seed(0))
    rows, end = fidelity.fidelity_rows(method, OracleNet(method, charges, charge_labels), x, labels, charges, charge_labels, method.times(40))
    assert len(rows) == 40 and rows[0]["z"] == pytest.approx(cfg.z_max)
    for r in rows:
        assert r["cos_v_x"] == pytest.approx(1.0, abs=1e-4) and r["speed_ratio"] == pytest.approx(1.0, abs=1e-3)
        assert r["v_z_net"] == pytest.approx(r["v_z_target"], rel=1e-4)
    assert torch.cdist(end.flatten(1), charges).min(1).values.max() < 0.5  # Euler 40 ends near its charge


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        out.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def test_every_pfgm_ablation_arm_changes_only_what_it_names():
    ablation = load_benchmark("pfgm_ablation")
    for name, arm in ablation.ARMS.items():
        if arm.reuse:
            assert arm.reuse in ablation.ARMS and not ablation.ARMS[arm.reuse].reuse and arm.sample_overrides
            continue
        if arm.committed:  # score-only: a committed run of the arm's method, nothing changed
            run = ROOT / arm.committed
            assert json.loads((run / "config.json").read_text())["method"] == arm.method and (run / "ema.safetensors").is_file()
            assert not arm.overrides and not arm.sample_overrides
            continue
        base = _flat(ablation.RunConfig.from_dict(ablation.base_recipe(arm.method)).to_dict())
        cfg = _flat(ablation.arm_config(name, 1500).to_dict())
        changed = {k for k in cfg if cfg[k] != base[k]} - {"train.steps"}
        assert changed == set(_flat(arm.overrides)), name  # an override that names no field, or repeats the recipe, fails
        assert cfg["train.steps"] == 1500
    recipe = _flat(load_recipe(default_recipe("pfgm", "bloodmnist", 28)).to_dict())
    candidate = _flat(ablation.arm_config("cond_halfsum", 1500).to_dict())
    assert {k for k in recipe if recipe[k] != candidate[k]} == {"train.steps"}  # the PFGM recipe is the measured candidate


def test_killed_training_resumes_bit_for_bit(tmp_path, data_root):
    """The reliability benchmark in small: SIGKILL twice (once inside a checkpoint write), resume, compare."""
    import subprocess
    import sys

    out = tmp_path / "kill.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "kill_resume.py"), "--kills", "2", "--steps", "12", "--work", str(tmp_path / "work"), "--out", str(out)],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["exact"] and result["restarts_failed"] == 0 and result["final_step"] == 12
    assert result["exact_resumes"] == result["kills"] >= 1


def test_fuzzed_files_are_refused_in_one_line_or_read_correctly(tmp_path, data_root):
    """The fuzz benchmark in small: every corrupt case of every reader is refused by name, none crashes."""
    import subprocess
    import sys

    out = tmp_path / "fuzz.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "fuzz_readers.py"), "--random", "4", "--work", str(tmp_path / "work"), "--out", str(out), "--data-root", str(data_root)],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    result = json.loads(out.read_text())
    assert done.returncode == 0 and result["total"]["crash"] == 0, [c for r in result["readers"].values() for c in r["crashes"]]
    assert result["total"]["refused"] >= 90 and set(result["readers"]) >= {"checkpoint", "model file", "recipe", "evaluation result", "MedMNIST data file"}
    assert result["readers"]["model file"]["accepted"] == 0  # the header's SHA-256 catches every damaged byte


def test_an_old_layout_grid_gives_back_its_sample_pixels_exactly():
    """benchmarks/regrid.py: a picture drawn in the old framed, freely scaled layout from known random
    images is read back to those images pixel for pixel, and a picture of another layout is not."""
    regrid = load_benchmark("regrid")
    rng = np.random.default_rng(0)
    rows = ["0 first class", "1 second class", "2 third"]
    canvas = rng.integers(0, 256, (3 * regrid.SIDE, 8 * regrid.SIDE, 3), dtype=np.uint8)
    picture = regrid.old_layout(canvas, rows, "some model heun 18", dpi=80)
    recovered, agreement = regrid.recover(picture, rows, "some model heun 18")
    np.testing.assert_array_equal(recovered, canvas)
    assert agreement == 1.0
    assert regrid.recover(picture[:, :-3], rows, "some model heun 18") is None  # no old layout has that size


def test_high_frequency_share_is_zero_for_smooth_and_one_for_nyquist_images():
    """benchmarks/spectrum.py: a constant image has no power above a quarter of the side, a pixel checkerboard of
    0 and 255 (values -1 and +1: all power at the Nyquist frequency) has all of it, white noise has the share of
    the frequency bins, and blurring lowers it."""
    spectrum = load_benchmark("spectrum")
    flat = np.full((1, 28, 28, 3), 200, np.uint8)
    checker = ((np.indices((28, 28)).sum(0) % 2) * 255).astype(np.uint8)[None, ..., None].repeat(3, -1)
    assert spectrum.high_frequency_share(flat) == pytest.approx(0.0, abs=1e-12)
    assert spectrum.high_frequency_share(checker) == pytest.approx(1.0, abs=1e-12)
    noise = np.random.default_rng(0).integers(0, 256, (64, 28, 28, 1), dtype=np.uint8)  # white: flat spectrum
    yy, xx = np.mgrid[:28, :28]
    bins_above = float((np.hypot(yy - 14, xx - 14) >= 7).mean())  # so its share is the share of frequency bins
    assert spectrum.high_frequency_share(noise) == pytest.approx(bins_above, abs=0.01)
    blurred = ((noise.astype(np.float64) + np.roll(noise, 1, 1) + np.roll(noise, 1, 2) + np.roll(noise, (1, 1), (1, 2))) / 4).astype(np.uint8)
    assert spectrum.high_frequency_share(blurred) < bins_above - 0.2


def test_budget_power_law_recovers_a_known_law_and_inverts_it():
    """pfgm_ablation's extrapolation: a law sampled exactly is fitted back; steps_to_reach solves it in closed form."""
    ablation = load_benchmark("pfgm_ablation")
    floor, a, b = 29.8, 4.0e5, 0.9
    steps = np.array([1500, 3000, 4500, 6000])
    fit_a, fit_b = ablation.power_law(steps, floor + a * steps**-b, floor)
    assert fit_a == pytest.approx(a, rel=1e-9) and fit_b == pytest.approx(b, rel=1e-9)
    at = ablation.steps_to_reach(fit_a, fit_b, floor)  # excess = floor: the score is 2x the floor there
    assert a * at**-b == pytest.approx(floor, rel=1e-9)
    assert ablation.steps_to_reach(a, -0.1, floor) == float("inf")  # a law that does not fall never gets there


def test_failed_draws_counts_only_saturated_samples():
    """A sample with over a quarter of its raw values outside [-1, 1] counts as failed; a cell-like one does not."""
    ablation = load_benchmark("pfgm_ablation")
    gen = torch.Generator().manual_seed(0)
    cell = torch.rand(3, 3, 28, 28, generator=gen) * 1.8 - 0.9  # all inside
    cell[0, 0, :5] = 3.0  # 140 of 2,352 values out: 6 %, still a cell
    noise = torch.randn(1, 3, 28, 28, generator=gen) * 10  # ~92 % out
    assert ablation.failed_draws(cell) == 0.0
    assert ablation.failed_draws(torch.cat([cell, noise])) == pytest.approx(0.25)
    stand_ins = load_benchmark("fd_outliers").noise_draws(5, (3, 28, 28))  # fd_outliers' stand-ins for failed draws count as failed
    assert stand_ins.shape == (5, 3, 28, 28) and ablation.failed_draws(stand_ins) == 1.0


def test_the_augmentation_page_keeps_its_hand_written_reading(page, tmp_path):
    rng = np.random.default_rng(0)
    rows = [{"variant": v, "seed": s, **{m: float(rng.uniform(0.5, 0.9)) for m in page.METRICS}, "recall": rng.uniform(0, 1, 8),
             "train_images": 100, "width": 16, "batch_size": 128, "cpu_seconds": 10.0} for v in ("resample", "fill_x") for s in (0, 1, 2)]  # fmt: skip
    (tmp_path / "READING.md").write_text("The fill came closest on tail recall.\n")
    page.write_report(tmp_path, pd.DataFrame(rows), "bloodmnist", "python benchmarks/augmentation.py …", [44, 1206, 167, 625, 23, 86, 2330, 323], 300)
    text = (tmp_path / "README.md").read_text()
    assert text.index("The fill came closest on tail recall.") < text.index("| variant |")  # the reading leads, the table follows
    assert "classifiers trained on: not recorded (6)." in text
    assert "- **fill_x**: balanced accuracy" in text and (tmp_path / "per_class_recall.png").is_file()
    rows.append(rows[0] | {"variant": "fill_x_conv", "seed": 0, "machine": "CPU A"})  # a converged twin with one seed trained so far
    page.write_report(tmp_path, pd.DataFrame(rows), "bloodmnist", "python benchmarks/augmentation.py …", [44, 1206, 167, 625, 23, 86, 2330, 323], 300)
    text = (tmp_path / "README.md").read_text()
    assert f"| fill_x_conv (1 of 3 seeds) | 100 | 10 | {rows[0]['accuracy']:.3f} |" in text and "nan" not in text
    assert "classifiers trained on: not recorded (6); CPU A (1)." in text


def test_the_page_names_a_variant_whose_seeds_saw_different_draws(page):
    md5 = {("fill_x", 0): "a" * 32, ("fill_x", 1): "a" * 32, ("fill_x", 2): "b" * 32, ("resample", 0): "c" * 32, ("resample", 1): None, ("resample", 2): "c" * 32}
    df = pd.DataFrame([{"variant": v, "seed": s, "trained_on": m} for (v, s), m in md5.items()])
    lines = page.draw_lines(df)
    assert "- **fill_x** trained on different draws of its training file (MD5 seeds 0, 1: aaaaaaaa…; seed 2: bbbbbbbb…)." in lines
    assert not any("resample" in line for line in lines)  # one draw; a seed without the record is not a second draw
    assert page.draw_lines(df[df.variant == "resample"]) == [] and page.draw_lines(df.drop(columns="trained_on")) == []


def test_every_fill_image_is_audited_against_the_real_images_it_fills(bench, page, tmp_path, data_root):
    from medpfgm.data import load_split

    train, test = (load_split("bloodmnist", 28, s, data_root) for s in ("train", "test"))
    real, real_labels = train.images[:300], train.labels[:300]
    copies = real[real_labels == 1][:20]  # a generator that copied 20 of its training images, all called class 4
    honest = test.images[-60:]  # images no model saw
    images = np.concatenate([real, copies, honest])
    labels = np.concatenate([real_labels, np.full(20, 4), np.zeros(60, int)])
    synthetic = np.arange(len(images)) >= len(real)
    fill = tmp_path / "fill_x.npz"
    np.savez(fill, train_images=images, train_labels=labels[:, None], train_synthetic=synthetic)
    record = bench.audit_fill(tmp_path, fill, "bloodmnist", 28, str(data_root))
    assert record["n_fake"] == 80 and record["n_train"] == 300
    assert record["pixel"]["flagged_per_class"]["4"] == 1.0 and record["domain"]["flagged_per_class"]["4"] == 1.0  # every copy, both spaces
    assert record["pixel"]["flagged_per_class"]["0"] < 0.1  # the honest images: about 1 %
    assert (tmp_path / "quality" / record["figure"]).is_file()
    fill.unlink()  # fills are not kept: the audit is read back
    assert bench.audit_fill(tmp_path, fill, "bloodmnist", 28, str(data_root)) == json.loads(json.dumps(record))
    lines = page.audit_lines({"fill_x": record}, ["c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7"])
    assert any(line.startswith("| fill_x | 80 | 25.0% / 25.0% | c4 100.0% / c4 100.0% |") for line in lines)


def test_a_fills_own_images_are_scored_over_the_classes_it_fills(bench, page, tmp_path, data_root):
    """A fill of copied training images is scored as copies (every one flagged), and the class it leaves unfilled is not scored."""
    from medpfgm.data import load_split

    train = load_split("bloodmnist", 28, "train", data_root)
    copies = np.concatenate([np.flatnonzero(train.labels == c)[:15] for c in range(7)])  # class 7 gets no synthetic image
    real = np.arange(50)
    images, labels = train.images[np.concatenate([real, copies])], train.labels[np.concatenate([real, copies])]
    fill = tmp_path / "fill_x.npz"
    np.savez(fill, train_images=images, train_labels=labels[:, None], train_synthetic=np.arange(len(labels)) >= len(real))
    record = bench.fill_images_record(tmp_path, fill, "bloodmnist", 28, str(data_root), ["--data-root", str(data_root)])
    counts = record["setup"]["counts"]
    assert counts[7] == 0 and 0 < max(counts) <= 15 and sum(counts) >= 10
    assert record["memorization"]["pixel"]["flagged"] == 1.0  # copies of training images, every one
    assert record["score"]["class_fidelity"]["accuracy"] > 0.7  # real images, the right labels
    assert not (tmp_path / "quality" / "fill_x_images.npz").exists()  # evaluate's input is not kept
    fill.unlink()
    assert bench.fill_images_record(tmp_path, fill, "bloodmnist", 28, str(data_root), []) == record  # read back
    rows = [{"variant": "fill_x", "seed": s, **{m: 0.8 for m in page.METRICS}, "recall": np.full(8, 0.8), "train_images": 155,
             "width": 16, "batch_size": 128, "cpu_seconds": 10.0} for s in (0, 1, 2)]  # fmt: skip
    page.write_report(tmp_path, pd.DataFrame(rows), "bloodmnist", "python benchmarks/augmentation.py …", [44, 1206, 167, 625, 23, 86, 2330, 323], 300,
                       own_images={"fill_x": record})  # fmt: skip
    assert f"| fill_x | {sum(counts)} | {record['score']['fid']['fd']['mean']:.1f} (" in (tmp_path / "README.md").read_text()


def test_a_filters_pass_rate_on_real_images_is_measured_per_class(bench, page, capsys, tmp_path, data_root):
    from medpfgm.augment import provenance_path
    from medpfgm.cli import main
    from medpfgm.io import write_json

    clf = tmp_path / "clf"
    assert main(["classify", "--dataset", "bloodmnist", "--out", str(clf), "--steps", "1", "--width", "4", "--quiet", "--data-root", str(data_root)]) == 0
    sha = json.loads((clf / "classifier.json").read_text())["sha256"]
    names = ["c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7"]
    for q, rate in ((0.0, 1.0), (1.01, 0.0)):  # a filter that passes everything, one that passes nothing
        fill = tmp_path / f"fill_q{q}.npz"
        write_json(provenance_path(fill), {"filter": {"classifier": str(clf), "sha256": sha, "min_confidence": q, "kept": [0] * 8, "drawn": [1] * 8}})
        record = bench.filter_on_real(tmp_path, fill, "bloodmnist", 28, str(data_root))
        assert record["pass_rate"] == [rate] * 8 and sum(record["test_counts"]) == 3421
    assert "The same filter passes, of the official test split's real images: c0 100.0%" in "\n".join(page.filter_lines(tmp_path, names))
    write_json(provenance_path(tmp_path / "fill_other.npz"), {"filter": {"classifier": str(clf), "sha256": "0" * 64, "min_confidence": 0.5}})
    assert bench.filter_on_real(tmp_path, tmp_path / "fill_other.npz", "bloodmnist", 28, str(data_root)) is None  # not the filter that made it
