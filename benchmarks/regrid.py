"""Redraw the committed sample grids made before the exact-2x grid layout, from their own pixels.

    python benchmarks/regrid.py reports/bloodmnist_28 reports/retinamnist_28 [--dry-run]
    python benchmarks/regrid.py --ablation reports/bloodmnist_28/pfgm_ablation --fills reports/augmentation/bloodmnist_lt100

A one-time migration (the tree must stay under 64 MiB): the samples files behind the older grids left the
repository, so each grid's sample pixels are read back from the old picture itself. The old layout
(nearest-neighbour imshow, freely scaled, framed, at 80 or 120 dpi with 8, 10 or 12 images a class) is drawn
again with a canvas whose every pixel has its own colour; that picture says which screen pixels show which
sample pixel. A grid is redrawn only when its recovered pixels reproduce at least 99.5 % of the old
picture's image pixels exactly; otherwise it is left as it is and named. The new picture is what draws it
today — `medpfgm evaluate`, `benchmarks/pfgm_ablation.py` (``--ablation``) or `benchmarks/augmentation.py`
(``--fills``) — in the exact-2x layout, each pixel 2 x 2 screen pixels.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import matplotlib.pyplot as plt  # noqa: E402

from medpfgm.data import class_names  # noqa: E402
from medpfgm.errors import shorten  # noqa: E402
from medpfgm.figures import evaluation_grid  # noqa: E402

SIDE = 28  # every grid redrawn here is of 28-px images
AGREEMENT = 0.995


def old_layout(canvas: np.ndarray, row_names: list[str], title: str, dpi: int) -> np.ndarray:
    """The pre-2x class_grid picture of ``canvas`` (uint8 (rows*28, cols*28, 3)), as uint8 RGB (H, W, 3)."""
    per_class, rows = canvas.shape[1] // SIDE, canvas.shape[0] // SIDE
    scale = 64 / SIDE
    fig, ax = plt.subplots(figsize=(per_class * SIDE * scale / 64 + 2.5, rows * SIDE * scale / 64 + 0.6))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_yticks([SIDE * (i + 0.5) for i in range(rows)], row_names)
    ax.set_xticks([])
    ax.set_title(title, fontsize=9)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, format="png", bbox_inches="tight")
    plt.close(fig)
    return np.asarray(Image.open(buffer).convert("RGB"))


def index_canvas(rows: int, per_class: int) -> np.ndarray:
    """A canvas whose pixel k (row-major) has colour (200 + k // 65536, k // 256 % 256, k % 256)."""
    k = np.arange(rows * SIDE * per_class * SIDE).reshape(rows * SIDE, per_class * SIDE)
    return np.stack([200 + k // 65536, k // 256 % 256, k % 256], -1).astype(np.uint8)


def recover(old: np.ndarray, row_names: list[str], title: str) -> tuple[np.ndarray, float] | None:
    """The sample canvas behind an old grid picture and the fraction of its image pixels it reproduces; None
    when no old layout (8, 10 or 12 a class, 80 or 120 dpi) has the picture's size or shows every sample pixel."""
    rows = len(row_names)
    for per_class in (8, 10, 12):
        for dpi in (80, 120):
            codes = old_layout(index_canvas(rows, per_class), row_names, title, dpi)
            if codes.shape != old.shape:
                continue
            screen = (codes[..., 0] >= 200) & (codes[..., 0] <= 201)  # canvases here have under 131,072 pixels
            screen &= (screen.mean(1, keepdims=True) > 0.5) & (screen.mean(0, keepdims=True) > 0.5)  # the image area, not text
            k = (codes[..., 0].astype(np.int64) - 200) * 65536 + codes[..., 1].astype(np.int64) * 256 + codes[..., 2]
            size = rows * SIDE * per_class * SIDE
            screen &= k < size
            ks, colours = k[screen], old[screen]
            shown, first = np.unique(ks, return_index=True)
            if len(shown) < size:
                continue
            canvas = colours[first]  # then checked against every other screen pixel showing the same sample pixel
            agreement = float((canvas[ks] == colours).all(-1).mean())
            return canvas.reshape(rows * SIDE, per_class * SIDE, 3), agreement
    return None


def row_label_versions(names: list[str], classes: list[int]) -> list[list[str]]:
    """The row labels the old layout wrote for ``classes``, newest first (names cut at 30 characters, at first 24)."""
    return [[f"{c} {shorten(names[c], 30)}" for c in classes], [f"{c} {names[c][:24]}" for c in classes]]


def tracked_grids(folder: Path) -> list[tuple[Path, dict]]:
    """(grid, evaluation subject) for every evaluation of ``folder`` whose grid is in git and not yet 2x."""
    tracked = set(subprocess.run(["git", "ls-files", "-z", str(folder)], capture_output=True, text=True, check=True).stdout.split("\0"))
    out = []
    for record in sorted((folder / "evaluations").glob("*.json")):
        subject = json.loads(record.read_text())["subject"]
        grid = folder / subject["grid"]
        if str(grid) in tracked and not has_2x_layout(grid):
            out.append((grid, subject))
    return out


def has_2x_layout(grid: Path) -> bool:
    """True when the grid has no frame, i.e. was drawn by today's class_grid: the old ones have a black frame
    line across most of the picture's height and width (near-black sample columns do not span both)."""
    dark = np.asarray(Image.open(grid).convert("RGB")).sum(-1) < 120
    return not ((dark.mean(0) > 0.6).any() and (dark.mean(1) > 0.6).any())


def evaluation_jobs(folder: Path) -> list[tuple[Path, str, list[str], list[int], Callable]]:
    """(grid, title, class names, classes shown, redraw) for each old-layout evaluation grid of a report folder."""
    names = class_names(folder.name.rsplit("_", 1)[0])
    return [(grid, f"{subject['label']} {subject.get('setting', '')}", names, list(range(len(names))),
             lambda images, labels, grid=grid, subject=subject: evaluation_grid(images, labels, names, grid, subject))
            for grid, subject in tracked_grids(folder)]


def ablation_jobs(folder: Path) -> list[tuple[Path, str, list[str], list[int], Callable]]:
    """The same for the old-layout step pictures of the PFGM ablation (``<arm>/step<k>.png``)."""
    ablation = load_benchmark("pfgm_ablation")
    names = class_names("bloodmnist")
    jobs = []
    for record in sorted(folder.glob("*/step*.json")):
        picture, result = record.with_suffix(".png"), json.loads(record.read_text())
        if picture.is_file() and not has_2x_layout(picture):
            title = f"{record.parent.name}, step {result['step']}, {' '.join(map(str, ablation.SAMPLERS[result['method']]))}"
            jobs.append((picture, title, names, list(range(len(names))), lambda images, labels, picture=picture, title=title: ablation.draw_samples(images, labels, picture, title)))
    return jobs


def fill_jobs(folder: Path) -> list[tuple[Path, str, list[str], list[int], Callable]]:
    """The same for the old-layout fill pictures of an augmentation benchmark (``fill_<name>.png``: one row per
    class that received synthetic images, 12 a class, as `augmentation.py` draws them)."""
    augmentation = load_benchmark("augmentation")
    jobs = []
    for picture in sorted(folder.glob("fill_*.png")):
        if has_2x_layout(picture):
            continue
        provenance = json.loads(picture.with_suffix(".npz.provenance.json").read_text())
        dataset, classes = provenance["dataset"], [c for c, n in enumerate(provenance["filled"]) if n > 0]
        title = f"{picture.stem}: synthetic images only ({provenance['solver']} {provenance['steps']})"
        jobs.append((picture, title, class_names(dataset), classes, lambda images, labels, picture=picture, title=title, dataset=dataset:
                     augmentation.fill_grid(images, labels, dataset, picture, title)))
    return jobs


def load_benchmark(name: str):
    """Another script of benchmarks/ as a module (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="*", type=Path, help="report folders (reports/<dataset>_<size>)")
    p.add_argument("--ablation", type=Path, action="append", default=[], help="a PFGM ablation folder")
    p.add_argument("--fills", type=Path, action="append", default=[], help="an augmentation benchmark folder")
    p.add_argument("--dry-run", action="store_true")
    args = p.parse_args()
    jobs = ([job for folder in args.folders for job in evaluation_jobs(folder)] + [job for folder in args.ablation for job in ablation_jobs(folder)]
            + [job for folder in args.fills for job in fill_jobs(folder)])
    left = []
    for picture, title, names, classes, redraw in jobs:
        old = np.asarray(Image.open(picture).convert("RGB"))
        found = next(filter(None, (recover(old, rows, title) for rows in row_label_versions(names, classes))), None)
        if found is None or found[1] < AGREEMENT:
            left.append(f"{picture} ({'no old layout fits its size' if found is None else f'agreement {found[1]:.4f}'})")
            continue
        canvas, agreement = found
        rows, per_class = canvas.shape[0] // SIDE, canvas.shape[1] // SIDE
        images = canvas.reshape(rows, SIDE, per_class, SIDE, 3).transpose(0, 2, 1, 3, 4).reshape(-1, SIDE, SIDE, 3)
        before = picture.stat().st_size
        if not args.dry_run:
            redraw(images, np.repeat(np.asarray(classes), per_class))
        print(f"{picture}: agreement {agreement:.5f}, {before / 1e3:.0f} KB -> {picture.stat().st_size / 1e3:.0f} KB", flush=True)
    for line in left:
        print(f"left as it is: {line}")


if __name__ == "__main__":
    main()
