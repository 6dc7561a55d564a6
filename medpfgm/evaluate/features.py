"""Feature spaces: uint8 images (n, H, W, C) -> feature vectors (n, d), and the distance each reports.

- ``fid``: pytorch-fid's InceptionV3 (pool3, 2048-d) with its FID weights, inputs resized to 299 px
  bilinearly as pytorch-fid does; the weights file is hash-checked and read as tensors only.
- ``frd``: the Fréchet Radiomics Distance of the ``frd-score`` package (v1: PyRadiomics features of the
  Original, LoG and Wavelet images, z-scored by the real set, FRD = ln Fréchet distance). Images go to
  it as PNG files, as its own command line reads them (colour images become luminance there).
- ``domain``: penultimate features of a medpfgm classifier trained on the real training split.

Every space computes features the same way (``extract``) and has one ``distance`` (lower is better).
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medpfgm.data import to_unit_range
from medpfgm.errors import MedpfgmError
from medpfgm.evaluate.metrics import frechet_distance
from medpfgm.io import sha256_of

FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{FID_WEIGHTS_FILE}"
FID_SHA256_PREFIX = "6726825d"  # torch-hub convention: the file name carries its SHA-256 prefix


class FeatureUnavailable(MedpfgmError):
    """A feature space that cannot run here (e.g. FID weights offline): reported, never faked."""


class FeatureSpace:
    """Maps images to features; ``distance(real, fake)`` compares two feature sets (lower = closer)."""

    name = "features"
    title = "features"

    def extract(self, images: np.ndarray) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def distance(self, real: torch.Tensor, fake: torch.Tensor) -> float:
        return frechet_distance(real, fake)


class NetworkSpace(FeatureSpace):
    """Features of a torch module that maps float (n, C, H, W) in [-1, 1] to (n, d)."""

    def __init__(self, name: str, title: str, net: nn.Module, batch_size: int = 100, device: torch.device | str = "cpu"):
        self.name, self.title = name, title
        self.net = net.to(device).eval()
        self.batch_size, self.device = batch_size, device

    @torch.no_grad()
    def extract(self, images: np.ndarray) -> torch.Tensor:
        chunks = [self.net(to_unit_range(images[i : i + self.batch_size]).to(self.device)) for i in range(0, len(images), self.batch_size)]
        return torch.cat([c.flatten(1).double().cpu() for c in chunks])


# ---------------------------------------------------------------------------------------------- FID


class FIDInception(nn.Module):
    """pytorch-fid's InceptionV3 up to the final average pool: (n, C, H, W) in [-1, 1] -> (n, 2048).

    Preprocessing is pytorch-fid's: images in [0, 1], bilinear resize to 299 x 299, then 2x - 1.
    Grayscale images are repeated to three channels.
    """

    def __init__(self, inception: nn.Module):
        super().__init__()
        m = inception
        self.blocks = nn.Sequential(
            m.Conv2d_1a_3x3, m.Conv2d_2a_3x3, m.Conv2d_2b_3x3, nn.MaxPool2d(kernel_size=3, stride=2),
            m.Conv2d_3b_1x1, m.Conv2d_4a_3x3, nn.MaxPool2d(kernel_size=3, stride=2),
            m.Mixed_5b, m.Mixed_5c, m.Mixed_5d, m.Mixed_6a, m.Mixed_6b, m.Mixed_6c, m.Mixed_6d, m.Mixed_6e,
            m.Mixed_7a, m.Mixed_7b, m.Mixed_7c, nn.AdaptiveAvgPool2d(output_size=(1, 1)),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x + 1) / 2
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return self.blocks(2 * x - 1).flatten(1)


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


def locate_fid_weights(weights: str | Path | None = None, download: bool = True) -> Path:
    """The FID weights file: ``weights``, else $MEDPFGM_FID_WEIGHTS, else the torch hub cache (downloading there).

    Raises FeatureUnavailable with the places looked at and why a download failed.
    """
    explicit = weights or os.environ.get("MEDPFGM_FID_WEIGHTS")
    if explicit:
        if not Path(explicit).is_file():
            raise FeatureUnavailable(f"FID weights file '{explicit}' does not exist (from --fid-weights / MEDPFGM_FID_WEIGHTS)")
        return Path(explicit)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_FILE
    if cached.is_file():
        return cached
    if not download:
        raise FeatureUnavailable(f"FID weights {FID_WEIGHTS_FILE} not found in {cached.parent}; pass --fid-weights or set MEDPFGM_FID_WEIGHTS")
    cached.parent.mkdir(parents=True, exist_ok=True)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)
    try:
        torch.hub.download_url_to_file(FID_WEIGHTS_URL, str(cached), hash_prefix=None, progress=False)
    except Exception as exc:  # offline, proxy, HTTP error: all mean "not here"
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise FeatureUnavailable(
            f"FID weights {FID_WEIGHTS_FILE} are not on this machine and could not be downloaded ({reason}); "
            "pass --fid-weights FILE or set MEDPFGM_FID_WEIGHTS"
        ) from None
    finally:
        socket.setdefaulttimeout(previous)
    return cached


def load_fid_inception(path: str | Path, sha256_prefix: str = FID_SHA256_PREFIX) -> FIDInception:
    """Hash-check ``path`` against the published prefix and load it (tensors only) into the FID network."""
    path = Path(path)
    digest = sha256_of(path)
    if not digest.startswith(sha256_prefix):
        raise MedpfgmError(f"FID weights '{path}' have SHA-256 {digest[:12]}..., expected a hash starting {sha256_prefix}: not the pytorch-fid file")
    net = fid_inception_architecture()
    try:
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as exc:
        raise MedpfgmError(f"FID weights '{path}' cannot be loaded ({str(exc).splitlines()[0][:120]})") from None
    return FIDInception(net)


def inception_space(weights: str | Path | None = None, download: bool = True, device: torch.device | str = "cpu") -> NetworkSpace:
    """The FID feature space; raises FeatureUnavailable when the weights cannot be had."""
    return NetworkSpace("fid", "FID (InceptionV3, pytorch-fid weights)", load_fid_inception(locate_fid_weights(weights, download)), 50, device)


# ---------------------------------------------------------------------------------------------- FRD


class RadiomicsSpace(FeatureSpace):
    """frd-score's v1 radiomics features; ``distance`` is its FRD (z-score by the real set, ln Fréchet)."""

    name = "frd"
    title = "FRD (radiomics, frd-score v1)"

    def __init__(self, workers: int = 1):
        try:
            from frd_score import frd
        except ImportError as exc:
            raise FeatureUnavailable(f"FRD needs the frd-score and pyradiomics-bhklab packages ({exc}); pip install 'medpfgm[eval]'") from None
        self.frd = frd
        self.workers = workers
        self.extractor = frd.get_feature_extractor(frd_version="v1", image_dim=2)  # imports radiomics
        logging.getLogger("radiomics").setLevel(logging.ERROR)  # PyRadiomics logs every feature class at INFO

    def extract(self, images: np.ndarray) -> torch.Tensor:
        """(n, F) float64 features; a row of NaN for an image radiomics cannot describe (a constant image:
        its grey levels cannot be binned), which ``distance`` leaves out and the scores count."""
        from PIL import Image

        with tempfile.TemporaryDirectory(prefix="medpfgm-frd-") as tmp:
            files = []
            for i, image in enumerate(images):
                files.append(Path(tmp) / f"{i:06d}.png")
                Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(files[-1])
            try:
                return self._features(files)
            except ValueError:  # one bad image fails frd-score's whole batch: go image by image
                rows = [self._features_or_none(f) for f in files]
        width = next((len(r[0]) for r in rows if r is not None), 0)
        return torch.from_numpy(np.stack([r[0] if r is not None else np.full(width, np.nan) for r in rows]))

    def _features(self, files: list[Path]) -> torch.Tensor:
        features, _, _ = self.frd.compute_features(files, self.extractor, num_workers=self.workers, frd_version="v1")
        return torch.from_numpy(np.asarray(features, dtype=np.float64))

    def _features_or_none(self, file: Path) -> np.ndarray | None:
        try:
            return self._features([file]).numpy()
        except ValueError:
            return None

    def distance(self, real: torch.Tensor, fake: torch.Tensor) -> float:
        """frd-score's v1 FRD: drop NaN rows, z-score both sets by the real one, drop non-finite columns, ln FD."""
        real, fake = (f.numpy()[~np.isnan(f.numpy()).any(1)].astype(np.float32) for f in (real, fake))
        with np.errstate(divide="ignore", invalid="ignore"):
            norm = [
                self.frd.z_score_normalize(f, 0, 1, base_distribution=real, replace_nan=False, handle_std_zero=False)
                for f in (real, fake)
            ]
        keep = np.isfinite(norm[0]).all(0) & np.isfinite(norm[1]).all(0)
        mu_r, mu_f = (n[:, keep].mean(0) for n in norm)
        cov_r, cov_f = (np.cov(n[:, keep], rowvar=False) for n in norm)
        fd = float(self.frd.calculate_frechet_distance(mu_r, cov_r, mu_f, cov_f))
        return float(np.log(fd)) if fd > 0 else float("-inf")


# ------------------------------------------------------------------------------------------ domain


class _Penultimate(nn.Module):
    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from medpfgm.classifier import penultimate_features

        return penultimate_features(self.classifier, x)


def domain_space(classifier: nn.Module, device: torch.device | str = "cpu") -> NetworkSpace:
    """Penultimate features of a medpfgm classifier (``medpfgm classify``)."""
    return NetworkSpace("domain", "domain Fréchet distance (classifier features)", _Penultimate(classifier), 500, device)
