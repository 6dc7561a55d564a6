"""Pictures people look at: per-class sample grids and loss curves (PNG, written atomically)."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from medpfgm.errors import shorten  # noqa: E402
from medpfgm.io import atomic_write, read_jsonl  # noqa: E402


def distinct_colors(n: int) -> list[tuple]:
    """``n`` colours for lines that must be told apart: tab10 up to 10, then tab20 + tab20b (40; matplotlib's default
    cycle repeats after 10), cycled beyond."""
    palette = plt.get_cmap("tab10").colors if n <= 10 else (*plt.get_cmap("tab20").colors, *plt.get_cmap("tab20b").colors)
    return [palette[i % len(palette)] for i in range(n)]


def legend_beside(ax, handles: list | None = None) -> None:
    """The legend right of ``ax``, outside it, so that it hides no line or bar (the figure needs
    ``layout="constrained"`` to keep room for it); ``handles``: the entries, when not the axes' own."""
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def _save(fig, path: str | Path, dpi: int = 120, palette: bool = False) -> Path:
    """Write ``fig`` as an RGB PNG (atomically) and close it; ``palette``: as 256 colours (for charts of lines
    and text, where it looks the same and is ~3× smaller — the committed tree has a size limit)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, format="png", bbox_inches="tight")
    plt.close(fig)
    # matplotlib writes RGBA; our figures are opaque, and dropping the alpha channel makes the PNG ~10 % smaller
    image = Image.open(buffer).convert("RGB")
    if palette:
        image = image.quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    return atomic_write(path, lambda tmp: image.save(tmp, format="png", optimize=True))


def class_grid(images: np.ndarray, labels: np.ndarray, names: list[str], path: str | Path, per_class: int = 10, title: str = "", dpi: int = 120) -> Path:
    """One row per class present in ``labels`` with up to ``per_class`` images each; the row label is the class name.

    images: uint8 (n, H, W, C); labels: (n,) int. Each image pixel becomes exactly zoom x zoom screen pixels
    (zoom 2 below 64 px, else 1): no resampling blur, and a PNG about a third smaller than a freely scaled one.
    """
    classes = [c for c in range(len(names)) if (labels == c).any()]
    per_class = min(per_class, max(int((labels == c).sum()) for c in classes))
    h, w, ch = images.shape[1:]
    rows = []
    for c in classes:
        row = images[labels == c][:per_class]
        row = np.concatenate([row, np.full((per_class - len(row), h, w, ch), 255, np.uint8)])
        rows.append(np.concatenate(list(row), axis=1))
    canvas = np.concatenate(rows, axis=0)
    zoom = 2 if h < 64 else 1
    width, height = canvas.shape[1] * zoom / dpi, canvas.shape[0] * zoom / dpi  # inches
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))  # the image fills the figure; labels and title fall outside (bbox "tight")
    ax.imshow(canvas.squeeze(-1) if ch == 1 else canvas, cmap="gray" if ch == 1 else None, interpolation="nearest", aspect="auto")
    ax.set_yticks([h * (i + 0.5) for i in range(len(classes))], [f"{c} {shorten(names[c], 30)}" for c in classes], fontsize=8)
    ax.set_xticks([])
    ax.tick_params(left=False)
    ax.spines[:].set_visible(False)  # a frame would paint over the outer sample pixels
    if title:
        ax.set_title(title, fontsize=8)
    return _save(fig, path, dpi)


def evaluation_grid(images: np.ndarray, labels: np.ndarray, names: list[str], path: str | Path, subject: dict) -> Path:
    """The per-class grid of one evaluated setting, as report pages show it (title: model and sampler): 8 images
    a class at 80 dpi, about 175 KB at 28 px, since every evaluated setting commits one (the tree stays under 64 MB)."""
    return class_grid(images, labels, names, path, per_class=8, title=f"{subject['label']} {subject.get('setting', '')}", dpi=80)


def plot_loss(log_path: str | Path, path: str | Path, title: str = "") -> Path | None:
    """The logged training loss against step (log scale); None when the log is empty."""
    records = [r for r in read_jsonl(log_path) if "loss" in r] if Path(log_path).is_file() else []  # not the event lines
    if not records:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in records], [r["loss"] for r in records], lw=1)
    ax.set(xlabel="step", ylabel="loss (mean per logged window)", yscale="log", title=title)
    ax.grid(alpha=0.3)
    return _save(fig, path, palette=True)


def image_pairs(top: list[np.ndarray], bottom: list[np.ndarray], captions: list[str], path: str | Path, title: str = "") -> Path:
    """Columns of two images, ``top[i]`` above ``bottom[i]`` (uint8 (H, W, C) each), with ``captions[i]`` over each column."""
    k = len(top)
    fig, axes = plt.subplots(2, max(k, 1), figsize=(1.3 * max(k, 1) + 0.8, 3.0), squeeze=False)
    for j in range(max(k, 1)):
        for row, images in enumerate((top, bottom)):
            ax = axes[row][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < k:
                image = images[j]
                ax.imshow(image.squeeze(-1) if image.shape[-1] == 1 else image, cmap="gray" if image.shape[-1] == 1 else None, interpolation="nearest")
        if j < k:
            axes[0][j].set_title(captions[j], fontsize=8)
    axes[0][0].set_ylabel("synthetic", fontsize=8)
    axes[1][0].set_ylabel("nearest\ntraining", fontsize=8)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)
