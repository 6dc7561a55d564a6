"""Batched sampling: a killed ``generate`` resumes from its finished batches and gives the same images."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from medpfgm.config import DDPMConfig
from medpfgm.methods.ddpm import DDPM
from medpfgm.sample import generate, partial_path
from tests.conftest import OracleEpsilon

DATA = torch.tensor([[0.5, -0.5], [-0.6, 0.4]])


class Killed(Exception):
    pass


class DiesAfter(torch.nn.Module):
    """The oracle network, raising on its ``n``-th call: a job killed part-way through sampling."""

    def __init__(self, net, n: int):
        super().__init__()
        self.net, self.n, self.calls = net, n, 0

    def forward(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.n:
            raise Killed
        return self.net(*args, **kwargs)


def toy_run(tmp_path, net=None):
    method = DDPM(DDPMConfig(), (2, 1, 1))
    return SimpleNamespace(method=method, net=net or OracleEpsilon(method, DATA), paths=SimpleNamespace(root=tmp_path), step=7)


def sample(run, labels, resume=None, seed=3):
    # ancestral DDPM: every step draws noise, so a resume that reseeded wrongly would show
    return generate(run, labels, "ddpm", 10, 1e-3, 1e-3, batch_size=3, seed=seed, device=torch.device("cpu"), progress=False, resume=resume)


def test_killed_sampling_resumes_to_the_same_images(tmp_path):
    labels = np.zeros(10, dtype=np.int64)  # 4 batches of 3, 3, 3, 1
    whole, whole_nfes, _ = sample(toy_run(tmp_path), labels)
    resume = partial_path(tmp_path / "samples.npz")
    dying = toy_run(tmp_path)
    dying.net = DiesAfter(dying.net, n=25)  # inside the third batch (10 calls per batch)
    with pytest.raises(Killed):
        sample(dying, labels, resume)
    with np.load(resume) as f:
        assert f["images"].shape == (6, 1, 1, 2) and list(f["nfe"]) == [10, 10]
    resumed_run = toy_run(tmp_path)
    resumed_run.net = DiesAfter(resumed_run.net, n=10**9)
    images, nfes, seconds = sample(resumed_run, labels, resume)
    assert resumed_run.net.calls == 20  # only the last two batches were sampled again
    np.testing.assert_array_equal(images, whole)
    assert nfes == whole_nfes == [10, 10, 10, 10] and seconds > 0
    assert not resume.exists()


def test_a_kept_resume_file_gives_back_a_finished_draw_without_sampling(tmp_path):
    labels = np.zeros(7, dtype=np.int64)
    resume = partial_path(tmp_path / "samples.npz")
    whole, nfes, _ = generate(toy_run(tmp_path), labels, "ddpm", 10, 1e-3, 1e-3, batch_size=3, seed=3, device=torch.device("cpu"), progress=False,
                              resume=resume, keep_resume=True)  # fmt: skip
    with np.load(resume) as f:
        np.testing.assert_array_equal(f["images"], whole)  # every batch, the last one too
    again = toy_run(tmp_path)
    again.net = DiesAfter(again.net, n=1)  # any network call would raise
    images, again_nfes, _ = generate(again, labels, "ddpm", 10, 1e-3, 1e-3, batch_size=3, seed=3, device=torch.device("cpu"), progress=False,
                                     resume=resume, keep_resume=True)  # fmt: skip
    np.testing.assert_array_equal(images, whole)
    assert again_nfes == nfes and resume.exists()


def test_partial_file_of_other_settings_is_not_used(tmp_path):
    labels = np.zeros(7, dtype=np.int64)
    resume = partial_path(tmp_path / "samples.npz")
    dying = toy_run(tmp_path)
    dying.net = DiesAfter(dying.net, n=15)
    with pytest.raises(Killed):
        sample(dying, labels, resume, seed=3)
    assert resume.exists()
    fresh, _, _ = sample(toy_run(tmp_path), labels, seed=4)
    resumed, _, _ = sample(toy_run(tmp_path), labels, resume, seed=4)
    np.testing.assert_array_equal(resumed, fresh)
    assert not np.array_equal(resumed[:3], sample(toy_run(tmp_path), labels, seed=3)[0][:3])


def test_charts_tell_their_lines_apart_and_are_written_as_palette_pngs(tmp_path):
    import json

    import matplotlib.pyplot as plt
    from PIL import Image

    from medpfgm.figures import distinct_colors, plot_loss

    assert distinct_colors(5) == list(plt.get_cmap("tab10").colors[:5])
    assert len(set(distinct_colors(40))) == 40 and distinct_colors(41)[40] == distinct_colors(41)[0]  # 40 apart, then cycled
    log = tmp_path / "log.jsonl"
    log.write_text("\n".join(json.dumps({"step": s, "loss": 1.0 / s}) for s in range(1, 50)))
    chart = plot_loss(log, tmp_path / "loss.png")
    assert Image.open(chart).mode == "P"  # a chart of lines and text: 256 colours (grids of samples stay RGB, below)


def test_class_grid_shows_every_sample_pixel_unchanged_at_twice_the_size(tmp_path):
    from PIL import Image

    from medpfgm.figures import class_grid

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (24, 28, 28, 3), dtype=np.uint8)  # noise: any resampling would change it
    labels = np.repeat(np.arange(3), 8)
    path = class_grid(images, labels, ["a", "b", "c"], tmp_path / "grid.png", per_class=8, title="t", dpi=80)
    assert Image.open(path).mode == "RGB"  # opaque figures carry no alpha channel (a tenth of the bytes)
    png = np.asarray(Image.open(path))
    canvas = np.concatenate([np.concatenate(list(images[labels == c]), axis=1) for c in range(3)], axis=0)
    zoomed = canvas.repeat(2, axis=0).repeat(2, axis=1)
    h, w = zoomed.shape[:2]
    hits = [(y, x) for y in range(png.shape[0] - h + 1) for x in range(png.shape[1] - w + 1)
            if np.array_equal(png[y, x:x + 8], zoomed[0, :8]) and np.array_equal(png[y:y + h, x:x + w], zoomed)]  # fmt: skip
    assert len(hits) == 1
