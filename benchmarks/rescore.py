"""Add feature spaces (FID) to every committed evaluation of a report folder, then rebuild its page.

    python benchmarks/rescore.py reports/bloodmnist_28 --metrics domain,fid

Each ``evaluations/*.json`` made from a run is scored again from its cached samples (nothing is
re-sampled) and the ladder too, in one process so that the real pools are featurised once. Spaces
not asked for (FRD) are kept from the files as they are (``keep_previous_spaces``); the domain space
is always re-scored and must reproduce its committed numbers, which this script checks. A file whose
requested spaces are already there is skipped, so a killed run resumes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medpfgm.data import load_split  # noqa: E402
from medpfgm.evaluate import pipeline as P  # noqa: E402
from medpfgm.evaluate.protocol import ImageSet  # noqa: E402
from medpfgm.evaluate.report import build_report  # noqa: E402
from medpfgm.run import load_run  # noqa: E402


def pending(folder: Path, spaces: list[str]) -> list[Path]:
    """Evaluation files of runs that lack one of ``spaces``."""
    files = []
    for path in sorted((folder / "evaluations").glob("*.json")):
        record = json.loads(path.read_text())
        if record["subject"].get("run") and any(s not in record["score"] for s in spaces):
            files.append(path)
    return files


def rescore(path: Path, evaluator, unavailable, meta, folder: Path) -> str:
    """Score one evaluation file's cached samples again; returns its summary line."""
    old = json.loads(path.read_text())
    s = old["subject"]
    run = load_run(s["run"])
    if run.step != s["step"]:
        raise SystemExit(f"{path}: run {s['run']} is at step {run.step}, the evaluation used step {s['step']}")
    fake, subject, stem = P.run_subject(run, s["run"], evaluator.counts, s["solver"], s.get("steps"), s.get("rtol"), None, old["setup"]["seed"], "cpu", False)
    if subject["samples"] != s["samples"] or stem != path.stem:
        raise SystemExit(f"{path}: cached samples {s['samples']} were not found (got {subject['samples']}); nothing re-sampled")
    record = P.write_evaluation(path, folder / "grids", subject, fake, evaluator, unavailable, meta, old["setup"]["dataset"], old["setup"]["size"])
    before, after = old["score"]["domain"]["fd"]["mean"], record["score"]["domain"]["fd"]["mean"]
    if abs(before - after) > 1e-6 * max(1.0, abs(before)):
        print(f"  note: domain FD {before:.6g} -> {after:.6g} (classifier features recomputed on this machine)", flush=True)
    return P.summary_line(record)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", type=Path, help="report folders, e.g. reports/bloodmnist_28")
    p.add_argument("--metrics", default="domain,fid")
    p.add_argument("--fid-weights")
    p.add_argument("--data-root")
    args = p.parse_args()
    spaces = P.parse_metrics(args.metrics)
    for folder in args.folders:
        files = pending(folder, spaces)
        ladder = folder / "ladder.json"
        ladder_todo = ladder.is_file() and any(s not in json.loads(ladder.read_text())["rungs"]["real"] for s in spaces if s != "domain")
        if not files and not ladder_todo:
            print(f"{folder}: every evaluation has {', '.join(spaces)}", flush=True)
            build_report(folder)
            continue
        setup = json.loads((files[0] if files else ladder).read_text())["setup"]
        train, test = (load_split(setup["dataset"], setup["size"], split, args.data_root) for split in ("train", "test"))
        evaluator, unavailable, meta = P.build_evaluator(train, test, setup["counts"], spaces, folder / "classifier", args.fid_weights, setup["repeats"], setup["seed"], "cpu")
        if unavailable:
            raise SystemExit(f"{folder}: {unavailable}")
        start = time.time()
        for i, path in enumerate(files, 1):
            line = rescore(path, evaluator, unavailable, meta, folder)
            rate = (time.time() - start) / i
            print(f"[{i}/{len(files)}] {path.name}: {line}  ({rate:.0f} s each, ETA {rate * (len(files) - i) / 60:.1f} min)", flush=True)
        if ladder_todo:
            own = json.loads(ladder.read_text())["setup"]  # the ladder may have been made with other counts or repeats
            if any(own[k] != setup[k] for k in ("counts", "repeats", "seed")):
                evaluator, unavailable, meta = P.build_evaluator(train, test, own["counts"], spaces, folder / "classifier", args.fid_weights, own["repeats"], own["seed"], "cpu")
            _, lines = P.write_ladder(evaluator, ImageSet(test.images, test.labels, "test"), ladder, unavailable)
            print("\n".join(["ladder:", *lines]), flush=True)
        print(f"wrote {build_report(folder)}", flush=True)


if __name__ == "__main__":
    main()
