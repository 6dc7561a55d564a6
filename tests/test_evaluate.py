"""The evaluation protocol, classifier, evaluator, ladder, `evaluate`/`classify`/`report` commands."""

from __future__ import annotations

import warnings

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from medpfgm.classifier import ClassifierConfig, classification_metrics, load_classifier, predict_proba, save_classifier, train_classifier
from medpfgm.data import load_split
from medpfgm.errors import MedpfgmError
from medpfgm.evaluate.evaluate import Evaluator, summarize
from medpfgm.evaluate.features import NetworkSpace, domain_space
from medpfgm.evaluate.ladder import class_swap, run_ladder
from medpfgm.evaluate.protocol import ImageSet, max_stratified_n, stratified_counts
from tests.test_cli import assert_one_line_error, run_cli


def test_stratified_counts_sum_to_n_and_follow_the_proportions():
    counts = stratified_counts(np.array([486, 128, 206, 194, 66]), 200)
    assert counts.sum() == 200
    np.testing.assert_allclose(counts, np.array([486, 128, 206, 194, 66]) / 1080 * 200, atol=1)
    split = np.array([174, 46, 92, 68, 20])
    n = max_stratified_n(split, np.array([486, 128, 206, 194, 66]))
    assert np.all(stratified_counts([486, 128, 206, 194, 66], n) <= split)
    assert n >= int(20 / (66 / 1080))  # at least what the rarest class allows before rounding
    assert np.any(stratified_counts([486, 128, 206, 194, 66], n + 12) > split)


@pytest.fixture(scope="module")
def retina(data_root):
    return load_split("retinamnist", 28, "train", data_root), load_split("retinamnist", 28, "test", data_root)


@pytest.fixture(scope="module")
def tiny_classifier(retina, tmp_path_factory):
    torch.set_num_threads(1)
    train, _ = retina
    net, info = train_classifier(train.images, train.labels, 5, ClassifierConfig(width=8, epochs=3, seed=0), progress=False)
    folder = save_classifier(tmp_path_factory.mktemp("clf") / "classifier", net, ClassifierConfig(width=8, epochs=3), {"dataset": "retinamnist", "size": 28, "test": {"accuracy": 0.0}})
    return net, folder


def test_a_step_budget_replaces_epochs_across_epoch_boundaries(retina):
    train, _ = retina
    images, labels = train.images[:50], train.labels[:50]
    for balanced in (False, True):
        cfg = ClassifierConfig(width=4, steps=7, batch_size=16, balanced=balanced, epochs=100)
        assert train_classifier(images, labels, 5, cfg, progress=False)[1]["train_steps"] == 7  # 4 batches an epoch
    assert train_classifier(images, labels, 5, ClassifierConfig(width=4, epochs=2, batch_size=16), progress=False)[1]["train_steps"] == 8
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the mean of an empty slice would warn, then give NaN
        info = train_classifier(images, labels, 5, ClassifierConfig(width=4, steps=3, batch_size=16), progress=False)[1]
    assert np.isfinite(info["final_epoch_loss"])  # under one epoch: the mean of the steps there are


def test_classifier_learns_and_round_trips(tiny_classifier, retina):
    net, folder = tiny_classifier
    _, test = retina
    probs = predict_proba(net, test.images)
    metrics = classification_metrics(probs, test.labels)
    assert metrics["auc"] > 0.6  # chance is 0.5
    assert len(metrics["per_class_recall"]) == 5
    loaded, meta = load_classifier(folder)
    np.testing.assert_allclose(predict_proba(loaded, test.images[:20]), probs[:20], rtol=1e-5, atol=1e-6)
    weights = folder / "classifier.pt"
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(MedpfgmError, match="SHA-256"):
        load_classifier(folder)


def test_classification_metrics_on_a_known_case():
    probs = np.eye(3)[[0, 0, 1, 2, 2, 2]] * 0.7 + 0.1
    labels = np.array([0, 1, 1, 2, 2, 2])  # one class-1 image called class 0
    m = classification_metrics(probs, labels)
    assert m["accuracy"] == pytest.approx(5 / 6)
    assert m["per_class_recall"] == pytest.approx([1.0, 0.5, 1.0])
    assert m["balanced_accuracy"] == pytest.approx(2.5 / 3)


@pytest.fixture(scope="module")
def evaluator(tiny_classifier, data_root):
    net, _ = tiny_classifier
    counts = stratified_counts([486, 128, 206, 194, 66], 100)
    train, test = (load_split("retinamnist", 28, split, data_root) for split in ("train", "test"))
    return Evaluator(train, test, [domain_space(net)], counts, net, repeats=3, seed=0, use_cache=False)


def test_floor_is_the_score_of_the_real_test_subset_and_noise_scores_worse(evaluator):
    floor = evaluator.floor()
    again = evaluator.score(evaluator.test_pool)
    assert summarize(again) == summarize(floor)
    assert floor["counts"] == evaluator.counts.tolist()
    noise = ImageSet(np.random.default_rng(0).integers(0, 256, evaluator.test_pool.images.shape, dtype=np.uint8), evaluator.test_pool.labels)
    s_noise, s_floor = summarize(evaluator.score(noise)), summarize(floor)
    assert s_noise["domain_fd"]["mean"] > 5 * s_floor["domain_fd"]["mean"]
    assert s_noise["coverage"]["mean"] < s_floor["coverage"]["mean"]
    assert s_floor["domain_fd"]["std"] > 0  # a spread over reference draws
    assert set(floor["domain"]["fd_per_class"]) == {"0", "1", "2", "3", "4"}


def test_class_swap_keeps_labels_and_takes_the_next_class(retina):
    _, test = retina
    real = ImageSet(test.images[:50], test.labels[:50])
    swapped = class_swap(real, ImageSet(test.images, test.labels), 5, np.random.default_rng(0))
    np.testing.assert_array_equal(swapped.labels, real.labels)
    lookup = {img.tobytes(): lab for img, lab in zip(test.images, test.labels)}
    assert all(lookup[img.tobytes()] == (lab + 1) % 5 for img, lab in zip(swapped.images, swapped.labels))


def test_ladder_flags_a_metric_that_cannot_rank_it(evaluator, retina):
    _, test = retina
    blind = NetworkSpace("blind", "constant features", torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2352, 4)))
    torch.nn.init.zeros_(blind.net[1].weight)
    evaluator.spaces.append(blind)
    evaluator.pool_features["blind"] = (blind.extract(evaluator.train_pool.images), blind.extract(evaluator.test_pool.images))
    try:
        result = run_ladder(evaluator, ImageSet(test.images, test.labels))
    finally:
        evaluator.spaces.pop()
        del evaluator.pool_features["blind"]
    assert set(result["rungs"]) == {"real", "blur", "noise", "hue", "class_swap", "pure_noise"}
    assert not result["ranks"]["blind"] and "real does not beat blur" in result["failures"]["blind"]
    assert result["ranks"]["domain_fd"], result["failures"]["domain_fd"]
    assert result["rungs"]["pure_noise"]["domain_fd"]["mean"] > result["rungs"]["hue"]["domain_fd"]["mean"] > result["rungs"]["real"]["domain_fd"]["mean"]


@pytest.mark.slow
def test_evaluate_and_report_end_to_end(capsys, tmp_path, data_root):
    from tests.conftest import write_tiny_recipe

    run = tmp_path / "run"
    assert run_cli(capsys, "train", "--recipe", str(write_tiny_recipe(tmp_path / "t.toml")), "--run", str(run), "--quiet", "--device", "cpu")[0] == 0
    reports = tmp_path / "reports"
    clf = reports / "bloodmnist_28" / "classifier"
    train = load_split("bloodmnist", 28, "train", data_root)
    net, _ = train_classifier(train.images[:400], train.labels[:400], 8, ClassifierConfig(width=4, epochs=1), progress=False)
    save_classifier(clf, net, ClassifierConfig(width=4, epochs=1), {"dataset": "bloodmnist", "size": 28, "test": {"accuracy": 0.5}})
    common = ["--reports", str(reports), "--metrics", "domain", "--repeats", "2", "--quiet", "--device", "cpu"]
    for steps in ("2", "4"):
        code, out, err = run_cli(capsys, "evaluate", "--run", str(run), "--solver", "euler", "--steps", steps, "-n", "40", *common)
        assert code == 0, err
        assert "domain FD" in out and "class fidelity" in out
    record = json.loads((reports / "bloodmnist_28" / "evaluations" / "pfgm_euler4.json").read_text())
    other = tmp_path / "other_run"  # e.g. the same recipe trained on a long-tailed set: same label
    shutil.copytree(run, other)
    code, out, err = run_cli(capsys, "evaluate", "--run", str(other), "--solver", "euler", "--steps", "4", "-n", "40", *common)
    assert_one_line_error(code, err, "pfgm_euler4.json' holds the evaluation of run", "--out FILE or --reports DIR")
    assert json.loads((reports / "bloodmnist_28" / "evaluations" / "pfgm_euler4.json").read_text()) == record
    assert record["subject"]["nfe"] == 4 and sum(record["setup"]["counts"]) == 40
    assert (reports / "bloodmnist_28" / "grids" / "pfgm_euler4.png").is_file()
    code, out, err = run_cli(capsys, "evaluate", "--ladder", "--dataset", "bloodmnist", "-n", "40", *common)
    assert code == 0, err
    assert "domain_fd" in out
    code, out, err = run_cli(capsys, "evaluate", "--run", str(run), "--solver", "euler", "--steps", "4", "--full-reference", "-n", "48", *common)
    assert code == 0, err
    assert "at n 48 (floor" in out and "reference: 11959 training images" in out
    full = json.loads((reports / "bloodmnist_28" / "evaluations_full" / "pfgm_euler4_n48.json").read_text())
    assert full["n"] == full["n_floor"] == 48 and full["subject"]["setting"] == "euler 4"
    assert run_cli(capsys, "report", "--dataset", "bloodmnist", "--reports", str(reports))[0] == 0
    page = reports / "bloodmnist_28" / "README.md"
    assert "--solver euler --steps 4 --full-reference -n 48 --metrics domain --seed 0" in page.read_text()
    text = page.read_text()
    assert "real test vs train (floor)" in text and "| pfgm | euler 4 | 4 |" in text and "Validity ladder" in text
    assert (reports / "bloodmnist_28" / "quality_vs_nfe.png").is_file() and (reports / "bloodmnist_28" / "per_class.png").is_file()
    before = {p.name: p.read_bytes() for p in (reports / "bloodmnist_28").glob("*.*")}
    assert run_cli(capsys, "report", "--dataset", "bloodmnist", "--reports", str(reports))[0] == 0
    assert before == {p.name: p.read_bytes() for p in (reports / "bloodmnist_28").glob("*.*")}  # same inputs, same files
    grids = {p: p.read_bytes() for p in (reports / "bloodmnist_28" / "grids").glob("*.png")}
    linked = [reports / "bloodmnist_28" / line.split("](")[1].rstrip(")") for line in page.read_text().splitlines() if line.startswith("![pfgm](grids/")]
    assert linked and all(g in grids for g in linked)
    for g in grids:
        g.unlink()
    assert run_cli(capsys, "report", "--dataset", "bloodmnist", "--reports", str(reports))[0] == 0
    assert all(g.read_bytes() == grids[g] for g in linked)  # redrawn from the samples files they were made from
    moved = reports / "bloodmnist_28" / "evaluations" / "pfgm_euler4.json"
    score = {**record["score"], "domain": {**record["score"]["domain"], "featureless": 3}}
    moved.write_text(json.dumps({**record, "score": score, "setup": {**record["setup"], "machine": "Other CPU, 8 cores"}}))
    assert run_cli(capsys, "report", "--dataset", "bloodmnist", "--reports", str(reports))[0] == 0
    text = page.read_text()
    assert "(b) Other CPU, 8 cores" in text and "sampled on 2 machines" in text
    assert "flatter the model: pfgm euler 4: DOMAIN 3 of 40." in text
    assert f"| pfgm | euler 4 | 4 | {record['subject']['seconds_per_image']:.2f} (b) |" in text
    bench = Path(__file__).resolve().parents[1] / "benchmarks" / "sampling_cost.py"
    done = subprocess.run([sys.executable, str(bench), str(run), "--reports", str(reports), "--batch", "8", "--nfe", "2"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    cost = json.loads((reports / "bloodmnist_28" / "sampling_cost.json").read_text())["ms_per_image_nfe"]["pfgm"]
    assert cost > 0 and run_cli(capsys, "report", "--dataset", "bloodmnist", "--reports", str(reports))[0] == 0
    assert f"| 4 | {record['subject']['seconds_per_image']:.2f} (b) | {4 * cost / 1e3:.2f} |" in page.read_text()
    (reports / "bloodmnist_28" / "READING.md").write_text("Use pfgm with euler 4.\n")  # hand-written, kept across rebuilds
    assert run_cli(capsys, "report", "--dataset", "bloodmnist", "--reports", str(reports))[0] == 0
    text = page.read_text()
    assert text.index("## Reading") < text.index("Use pfgm with euler 4.") < text.index("## Overall")


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["evaluate", "--dataset", "bloodmnist", "--run", "x", "--ladder"], ["at most one of --run, --samples or --ladder"]),
        (["evaluate", "--ladder", "--dataset", "bloodmnist", "--metrics", "fid,lpips"], ["unknown metric 'lpips'", "domain, frd, fid"]),
        (["evaluate", "--ladder", "--dataset", "bloodmnist", "--classifier", "/nonexistent"], ["not a classifier folder", "medpfgm classify"]),
        (["evaluate", "--samples", "/nonexistent.npz", "--dataset", "bloodmnist"], ["samples file '/nonexistent.npz' does not exist"]),
        (["evaluate", "--ladder", "--dataset", "retinamnist", "-n", "5000"], ["-n 5000", "at most"]),
        (["report", "--dataset", "bloodmnist", "--reports", "/nonexistent"], ["no report folder"]),
        (["classify", "--dataset", "chestmnist", "--out", "/tmp/x"], ["chestmnist"]),
    ],
)
def test_bad_evaluation_arguments(capsys, args, fragments):
    assert_one_line_error(*run_cli(capsys, *args)[::2], *fragments)


def test_classify_command_writes_a_loadable_classifier(capsys, tmp_path, data_root):
    code, out, err = run_cli(capsys, "classify", "--dataset", "retinamnist", "--epochs", "1", "--width", "4", "--out", str(tmp_path / "c"), "--quiet", "--device", "cpu")
    assert code == 0, err
    assert "test accuracy" in out
    _, meta = load_classifier(tmp_path / "c")
    assert meta["dataset"] == "retinamnist" and 0 <= meta["test"]["accuracy"] <= 1


def test_rank_ladder_rules_on_constructed_values():
    from medpfgm.evaluate.ladder import rank_ladder

    def rungs(values):
        names = ("real", "blur", "noise", "hue", "class_swap", "pure_noise")
        return {r: {m: {"mean": v[i], "std": 0.0} for m, v in values.items()} for i, r in enumerate(names)}

    ranks, failures = rank_ladder(rungs({
        "domain_fd": [1, 5, 4, 9, 1, 50],        # class swap ignored: not class-aware
        "frd": [3, 2, 4, 5, 3, 9],               # blur scores better than real
        "domain_fd_class": [1, 5, 4, 9, 1, 50],  # class-aware: the swap must be worse than real
        "class_fidelity": [0.9, 0.8, 0.7, 0.5, 0.0, 0.1],  # higher is better; swap below noise is fine
        "coverage": [0.9, 0.5, 0.6, 0.2, 0.9, 0.3],  # hue below pure noise
    }))  # fmt: skip
    assert ranks == {"domain_fd": True, "frd": False, "domain_fd_class": False, "class_fidelity": True, "coverage": False}
    assert failures["frd"] == ["real does not beat blur"]
    assert failures["domain_fd_class"] == ["real does not beat class_swap"]
    assert failures["coverage"] == ["hue does not beat pure noise"]


def random_space(name: str, seed: int) -> NetworkSpace:
    torch.manual_seed(seed)
    return NetworkSpace(name, name, torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2)))


@pytest.fixture(scope="module")
def three_space_evaluators(tiny_classifier, data_root):
    """Evaluators over the same pools: (domain, frd-like, fid-like) and (domain, fid-like)."""
    net, _ = tiny_classifier
    counts = stratified_counts([486, 128, 206, 194, 66], 60)
    train, test = (load_split("retinamnist", 28, split, data_root) for split in ("train", "test"))
    frd, fid = random_space("frd", 1), random_space("fid", 2)
    fid.provenance = {"file": "weights.pt", "sha256": "ab" * 32}
    make = lambda spaces: Evaluator(train, test, spaces, counts, net, repeats=3, seed=0, use_cache=False)  # noqa: E731
    return make([domain_space(net), frd, fid]), make([domain_space(net), fid]), make([fid, domain_space(net)])


def test_a_space_scores_the_same_whichever_other_spaces_are_asked_for(three_space_evaluators):
    full, without_frd, reordered = three_space_evaluators
    fake = ImageSet(full.test_pool.images[::-1].copy(), full.test_pool.labels[::-1].copy())
    scores = [e.score(fake) for e in three_space_evaluators]
    assert scores[0]["fid"] == scores[1]["fid"] == scores[2]["fid"]
    assert scores[0]["domain"] == scores[1]["domain"] == scores[2]["domain"]
    assert scores[0]["fid"]["fd"]["mean"] > 0 and scores[0]["frd"] != scores[0]["fid"]


def test_adding_a_space_to_an_evaluation_keeps_the_others(three_space_evaluators, tmp_path):
    """`evaluate --metrics domain,fid` on an evaluation that has FRD adds FID and keeps FRD (the CLI's
    path, write_evaluation); another samples file is another evaluation and keeps nothing."""
    from medpfgm.evaluate.pipeline import write_evaluation

    full, without_frd, _ = three_space_evaluators
    fake = ImageSet(full.test_pool.images, full.test_pool.labels)
    meta = {"sha256": "c" * 64, "test": {"accuracy": 0.5}}
    out = tmp_path / "evaluations" / "model_heun18.json"
    subject = {"label": "model", "setting": "heun 18", "samples": "samples/a.npz", "seconds_per_image": 0.5}
    no_fid = copy.copy(full)
    no_fid.spaces = [s for s in full.spaces if s.name != "fid"]
    first = write_evaluation(out, tmp_path / "grids", subject, fake, no_fid, {"fid": "no weights offline"}, meta, "retinamnist", 28)
    assert "frd" in first["score"] and "fid" not in first["score"] and first["setup"]["weights"] == {}
    later = {**subject, "seconds_per_image": 9.9}  # timed again on a busy machine: the sitting that made the samples counts
    write_evaluation(out, tmp_path / "grids", later, fake, without_frd, {}, meta, "retinamnist", 28)
    merged = json.loads(out.read_text())
    assert merged["score"]["frd"] == first["score"]["frd"] and merged["floor"]["frd"] == first["floor"]["frd"]
    assert merged["score"]["fid"]["fd"]["mean"] > 0 and merged["unavailable"] == {}
    assert merged["setup"]["weights"]["fid"]["sha256"] == "ab" * 32 and merged["subject"]["seconds_per_image"] == 0.5
    other = {**subject, "samples": "samples/b.npz"}
    write_evaluation(out, tmp_path / "grids", other, fake, without_frd, {}, meta, "retinamnist", 28)
    assert "frd" not in json.loads(out.read_text())["score"]


def test_full_reference_scores_against_the_whole_training_split(tiny_classifier, retina):
    """Large-n protocol: the distance to every training image, the floor from the test split (all of it
    when it holds fewer images than the set, plus the set's distance at the floor's n)."""
    from medpfgm.evaluate.evaluate import full_reference_score
    from medpfgm.evaluate.metrics import frechet_distance

    net, _ = tiny_classifier
    train, test = retina
    space = domain_space(net)
    rng = np.random.default_rng(0)
    idx = rng.choice(len(train.labels), 500, replace=False)
    fake = ImageSet(train.images[idx][:, ::-1].copy(), train.labels[idx])  # mirrored training images
    out = full_reference_score([space], train, test, fake)
    ref = space.extract(train.images)
    assert out["n"] == 500 and out["n_reference"] == len(train.labels) == 1080 and out["n_floor"] == len(test.labels) == 400
    assert out["score"]["domain"] == pytest.approx(frechet_distance(ref, space.extract(fake.images)), rel=1e-9)
    assert out["floor"]["domain"] == pytest.approx(frechet_distance(ref, space.extract(test.images)), rel=1e-9)
    assert out["score"]["domain_at_floor_n"] > 0
    small = full_reference_score([space], train, test, ImageSet(fake.images[:100], fake.labels[:100]))
    assert small["n_floor"] == 100 and "domain_at_floor_n" not in small["score"]  # the test split holds 100 in these proportions


def test_adding_a_space_to_the_ladder_keeps_the_others(three_space_evaluators, retina, tmp_path):
    from medpfgm.evaluate.pipeline import write_ladder

    full, without_frd, _ = three_space_evaluators
    _, test = retina
    no_fid = copy.copy(full)
    no_fid.spaces = [s for s in full.spaces if s.name != "fid"]
    out = tmp_path / "ladder.json"
    write_ladder(no_fid, ImageSet(test.images, test.labels), out, {"fid": "no weights offline"})
    first = json.loads(out.read_text())
    write_ladder(without_frd, ImageSet(test.images, test.labels), out, {})
    merged = json.loads(out.read_text())
    assert {"frd", "fid", "domain_fd"} <= set(merged["ranks"]) and merged["unavailable"] == {}
    assert all(merged["rungs"][r]["frd"] == first["rungs"][r]["frd"] for r in first["rungs"])
    assert merged["setup"]["weights"]["fid"]["sha256"] == "ab" * 32


def test_quality_against_d_orders_every_d_and_places_pfgm_beside_them(tmp_path):
    import json
    import shutil

    from medpfgm.evaluate.report import build_report

    src = Path(__file__).resolve().parents[1] / "reports" / "bloodmnist_28"
    folder = tmp_path / "bloodmnist_28"
    shutil.copytree(src / "evaluations", folder / "evaluations")
    for path in (folder / "evaluations").glob("pfgmpp_d*_heun18.json"):
        if path.name not in ("pfgmpp_d128_heun18.json", "pfgmpp_dinf_heun18.json"):
            path.unlink()  # the committed sweep's other D: this test makes its own
    page = build_report(folder).read_text()
    assert "## Quality against D" not in page  # two D (128, inf) at Heun 18: no sweep yet
    d128 = json.loads((folder / "evaluations" / "pfgmpp_d128_heun18.json").read_text())
    for dim, fid in (("8", 40.0), ("2048", 30.0)):
        record = json.loads(json.dumps(d128))
        record["subject"]["label"] = f"pfgmpp_d{dim}"
        record["score"]["fid"]["fd"] = {"mean": fid, "std": 1.0}
        (folder / "evaluations" / f"pfgmpp_d{dim}_heun18.json").write_text(json.dumps(record))
    page = build_report(folder).read_text()
    section = page.split("## Quality against D")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| PFGM")]
    assert [r.split(" | ")[0] for r in rows] == ["| PFGM++ D = 8", "| PFGM++ D = 128", "| PFGM++ D = 2048", "| PFGM++ D = ∞", "| PFGM (D = 1, large-batch field), best by FID"]
    assert "| 30 ± 1 |" in rows[2] and "| 40 ± 1 |" in rows[0]
    pfgm_best = min((json.loads(p.read_text()) for p in (folder / "evaluations").glob("pfgm_*.json")), key=lambda r: r["score"]["fid"]["fd"]["mean"])
    assert pfgm_best["subject"]["setting"] in rows[-1]
    assert (folder / "quality_vs_d.png").stat().st_size > 5000


def test_guidance_section_lists_each_weight_of_a_dropout_run_and_reproduces_its_flags(tmp_path):
    import json
    import shutil

    from medpfgm.evaluate.report import build_report

    src = Path(__file__).resolve().parents[1] / "reports" / "bloodmnist_28"
    folder = tmp_path / "bloodmnist_28"
    shutil.copytree(src / "evaluations", folder / "evaluations")
    base = json.loads((folder / "evaluations" / "pfgmpp_d128_heun18.json").read_text())
    for w, fidelity in ((0, 0.80), (2, 0.95)):
        record = json.loads(json.dumps(base))
        s = record["subject"]
        s["label"], s["guidance"], s["run"] = "pfgmpp_d128_ld0.1" + (f"_cfg_w{w}" if w else ""), float(w), "runs/guided"
        record["score"]["class_fidelity"]["accuracy"] = fidelity
        (folder / "evaluations" / f"{s['label']}_heun18.json").write_text(json.dumps(record))
    page = build_report(folder).read_text()
    section = page.split("## Classifier-free guidance")[1].split("\n## ")[0]
    rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| 0 ") or line.startswith("| 2 ")]
    assert [r[0] for r in rows] == ["| 0", "| 2"]
    header = next(line for line in section.splitlines() if line.startswith("| w "))
    column = header.split(" | ").index("class fidelity")
    assert [r[column] for r in rows] == ["0.8", "0.95"]
    assert "medpfgm evaluate --run runs/guided --solver heun --steps 18 --guidance 2 -n" in page
    assert (folder / "guidance.png").stat().st_size > 5000


def test_a_bf16_setting_is_reproduced_with_its_flag_and_named_on_the_page():
    from medpfgm.evaluate.report import large_n_text, solver_args

    subject = {"solver": "ddpm", "steps": 1000, "setting": "ddpm 1000", "precision": "bfloat16"}
    record = {"subject": subject, "score": {"fid": 50.0}, "floor": {"fid": 5.0}, "n": 2000, "n_floor": 2000}
    assert solver_args(subject).split() == ["--solver", "ddpm", "--steps", "1000", "--bf16"]
    assert large_n_text(record).startswith("ddpm 1000 in bf16: 50 at n 2000")
    float32 = {**subject, "precision": "float32"}
    assert "--bf16" not in solver_args(float32) and "bf16" not in large_n_text({**record, "subject": float32})
