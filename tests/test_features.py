"""Feature spaces: the FID network equals pytorch-fid's, FRD and a small network rank real halves
below degraded sets (the FID weights themselves: test_fid_weights.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medpfgm.data import load_split
from medpfgm.evaluate import features as feat
from medpfgm.evaluate.ladder import blur


def test_fid_network_and_preprocessing_equal_pytorch_fid(monkeypatch):
    from pytorch_fid import inception as pf

    torch.manual_seed(0)
    net = feat.fid_inception_architecture()
    state = net.state_dict()
    monkeypatch.setattr(pf, "load_state_dict_from_url", lambda *a, **k: state)  # no download: same weights
    reference = pf.InceptionV3([3]).eval()
    ours = feat.FIDInception(net).eval()
    images = torch.rand(2, 3, 28, 28)
    with torch.no_grad():
        expected = reference(images)[0].flatten(1)
        got = ours(images * 2 - 1)
    assert got.shape == (2, 2048)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def real_sets(data_root):
    train = load_split("bloodmnist", 28, "train", data_root)
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(train.labels))
    return train.images[idx[:60]], train.images[idx[60:120]]


def test_network_space_pipeline_ranks_halves_below_blur(real_sets):
    """The FID pipeline end to end with a small random feature network (no download)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(), torch.nn.Conv2d(16, 16, 3, stride=2), torch.nn.AdaptiveAvgPool2d(2))
    space = feat.NetworkSpace("tiny", "tiny", net, batch_size=32)
    a, b = real_sets
    fa = space.extract(a)
    assert fa.shape == (60, 64) and fa.dtype == torch.float64
    assert space.distance(fa, space.extract(b)) < space.distance(fa, space.extract(blur(b, 1.5)))


def test_frd_is_smaller_for_real_halves_than_for_a_blurred_set(real_sets):
    space = feat.RadiomicsSpace()
    a, b = (s[:30] for s in real_sets)  # 30 vs 30 already separates them (about 5 vs 11); radiomics is slow
    fa = space.extract(a)
    assert fa.shape[0] == 30 and fa.shape[1] > 100  # hundreds of radiomics features per image
    halves = space.distance(fa, space.extract(b))
    blurred = space.distance(fa, space.extract(blur(b, 1.5)))
    assert halves < blurred


def test_frd_leaves_out_constant_images_and_counts_them(real_sets):
    """A black sample (seen from an early PFGM sampler) cannot be binned by radiomics: it must not
    stop the evaluation, it gets a NaN row, and the distance equals that of the set without it."""
    space = feat.RadiomicsSpace()
    a, b = (s[:20] for s in real_sets)
    with_black = b.copy()
    with_black[3] = 0
    fa, fb = space.extract(a), space.extract(np.delete(b, 3, axis=0))
    f_black = space.extract(with_black)
    assert torch.isnan(f_black[3]).all() and np.isfinite(np.delete(f_black.numpy(), 3, axis=0)).all()
    torch.testing.assert_close(torch.from_numpy(np.delete(f_black.numpy(), 3, axis=0)), fb)
    assert space.distance(fa, f_black) == pytest.approx(space.distance(fa, fb))
