"""MedMNIST data: where the files live, MD5 checks, downloads, MONAI transforms, random batches.

Files are read through the ``medmnist`` package from a root folder chosen as: ``--data-root``, else
the ``MEDPFGM_DATA`` environment variable, else medmnist's default (``~/.medmnist``). medmnist names
them ``<flag>.npz`` at 28 px and ``<flag>_<size>.npz`` otherwise, images uint8 (n, H, W, C).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.transforms import Compose, EnsureType, ScaleIntensityRange

from medpfgm.catalog import DATASETS, SIZES, check_class, check_dataset, check_size, class_names, num_channels  # noqa: F401 (re-exported)
from medpfgm.errors import MedpfgmError

SPLITS = ("train", "val", "test")
NPZ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile)  # what np.load raises for a damaged or foreign file
ENV_ROOT = "MEDPFGM_DATA"


def _info() -> dict:
    # medmnist creates ~/.medmnist when imported: import it only when data is really needed.
    from medmnist.info import INFO

    return INFO


def resolve_root(data_root: str | Path | None = None) -> Path:
    """The data folder: the argument, else $MEDPFGM_DATA, else medmnist's default root."""
    if data_root:
        return Path(data_root).expanduser()
    if os.environ.get(ENV_ROOT):
        return Path(os.environ[ENV_ROOT]).expanduser()
    return Path("~/.medmnist").expanduser()


def _size_suffix(size: int) -> str:
    return "" if size == 28 else f"_{size}"


def data_file(dataset: str, size: int, root: Path) -> Path:
    return Path(root) / f"{check_dataset(dataset)}{_size_suffix(check_size(size))}.npz"


def expected_md5(dataset: str, size: int) -> str:
    return _info()[check_dataset(dataset)][f"MD5{_size_suffix(check_size(size))}"]


@functools.lru_cache(maxsize=32)
def _md5_cached(path: str, nbytes: int, mtime_ns: int) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def md5sum(path: Path) -> str:
    stat = Path(path).stat()
    return _md5_cached(str(path), stat.st_size, stat.st_mtime_ns)


def provenance_path(path: Path) -> Path:
    """The sidecar of a file medpfgm derived from an official one (long-tailed, augmented)."""
    return Path(path).with_name(Path(path).name + ".provenance.json")


def _recorded_md5(path: Path, dataset: str, size: int) -> tuple[str, str]:
    """The MD5 a data file must have, and where that requirement comes from."""
    side = provenance_path(path)
    if side.is_file():
        try:
            return json.loads(side.read_text())["md5"], f"its provenance file {side.name}"
        except (ValueError, KeyError):
            raise MedpfgmError(f"provenance file '{side}' is corrupt; delete it and the data file, and make them again") from None
    return expected_md5(dataset, size), "medmnist INFO"


def _download(dataset: str, size: int, root: Path) -> None:
    import medmnist

    cls = getattr(medmnist, _info()[dataset]["python_class"])
    root.mkdir(parents=True, exist_ok=True)
    cls(split="train", root=str(root), size=size, download=True)


def ensure_file(dataset: str, size: int, root: Path, download: bool = True, verify: bool = True) -> Path:
    """Return the path of the dataset file, downloading it if missing, and check its MD5."""
    path = data_file(dataset, size, root)
    if not path.is_file() and download:
        try:
            _download(dataset, size, root)
        except Exception as exc:  # medmnist wraps every network failure in a multi-line RuntimeError
            reason = f"download failed: {type(exc).__name__}"
            if not path.is_file():
                url = _info()[dataset][f"url{_size_suffix(size)}"]
                raise MedpfgmError(
                    f"data file '{path.name}' not found in '{root}' and {reason}; put {url} there, "
                    f"or point --data-root / ${ENV_ROOT} at a folder that has it"
                ) from None
    if not path.is_file():
        raise MedpfgmError(
            f"data file '{path.name}' not found in '{root}'; pass --data-root / set ${ENV_ROOT}, or allow download"
        )
    if verify:
        (want, source), got = _recorded_md5(path, dataset, size), md5sum(path)
        if got != want:
            raise MedpfgmError(
                f"data file '{path}' has MD5 {got}, expected {want} ({source}): corrupt or not the official "
                "file; delete it to re-download, or pass --no-verify for your own MedMNIST-format file"
            )
    return path


@dataclass(frozen=True)
class Split:
    """One split in MedMNIST layout: images uint8 (n, H, W, C) and labels int64 (n,)."""

    images: np.ndarray
    labels: np.ndarray
    dataset: str
    size: int
    name: str

    @property
    def num_classes(self) -> int:
        return len(class_names(self.dataset))

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=self.num_classes)

    @functools.cached_property
    def fingerprint(self) -> str:
        """SHA-256 of the images and labels (not of the file), so copies of one set match; computed once."""
        digest = hashlib.sha256(repr((self.images.shape, self.labels.shape)).encode())
        digest.update(np.ascontiguousarray(self.labels).tobytes())
        for start in range(0, len(self.images), 1024):  # chunks: 224-px sets are memory-mapped
            digest.update(np.ascontiguousarray(self.images[start : start + 1024]).tobytes())
        return digest.hexdigest()

    def record(self) -> dict:
        """What a run stores about the split it was trained on (``data.json``)."""
        return {"dataset": self.dataset, "size": self.size, "split": self.name, "images": len(self.labels),
                "class_counts": self.class_counts().tolist(), "sha256": self.fingerprint}


def read_npz_split(path: Path, split: str, mmap: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, H, W, C) uint8 and labels (n,) int64 of one split of a MedMNIST-layout file."""
    if split not in SPLITS:
        raise MedpfgmError(f"unknown split '{split}'; choose one of: {', '.join(SPLITS)}")
    try:
        npz = np.load(path, mmap_mode="r" if mmap else None)
        images, labels = npz[f"{split}_images"], npz[f"{split}_labels"]
    except KeyError as exc:
        raise MedpfgmError(f"data file '{path}' has no {exc} array: not a MedMNIST-layout file") from None
    except NPZ_ERRORS as exc:
        raise MedpfgmError(f"data file '{path}' cannot be read ({exc})") from None
    if images.ndim == 3:  # grayscale MedMNIST sets store (n, H, W)
        images = images[..., None]
    labels = np.asarray(labels)
    if images.ndim != 4 or images.dtype != np.uint8 or labels.dtype.kind not in "iu" or labels.size != len(images) or not len(images):
        raise MedpfgmError(f"data file '{path}': split '{split}' must hold uint8 images (n, H, W[, C]) with n > 0 and one integer label "
                           f"each; it has {images.dtype} {images.shape} and {labels.dtype} labels {labels.shape}")  # fmt: skip
    return images, labels.reshape(-1).astype(np.int64)


def read_image_file(path: str | Path, split: str = "train") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images uint8 (n, H, W, C), labels int64 (n,) and synthetic mask bool (n,) of an image file.

    Reads a samples file of ``medpfgm synthesize`` (``images``, ``labels``: all synthetic), or one
    ``split`` of a MedMNIST-layout file: an official one (all real) or one written by ``medpfgm augment``
    (``<split>_synthetic`` marks the synthetic rows). Pickled objects are never loaded.
    """
    path = Path(path)
    if not path.is_file():
        raise MedpfgmError(f"image file '{path}' does not exist")
    try:
        with np.load(path, allow_pickle=False) as f:
            samples_file = "images" in f.files
            if samples_file:
                images, labels = f["images"], f["labels"]
            mask = f[f"{split}_synthetic"] if f"{split}_synthetic" in f.files else None
    except KeyError as exc:
        raise MedpfgmError(f"image file '{path}' has no {exc} array") from None
    except NPZ_ERRORS as exc:
        raise MedpfgmError(f"image file '{path}' cannot be read ({exc})") from None
    if not samples_file:
        images, labels = read_npz_split(path, split)
    synthetic = np.ones(len(labels), bool) if samples_file else np.zeros(len(labels), bool) if mask is None else mask.reshape(-1).astype(bool)
    images = images[..., None] if images.ndim == 3 else images
    labels = np.asarray(labels).reshape(-1)
    if images.ndim != 4 or images.dtype != np.uint8 or not len(images) == len(labels) == len(synthetic) or labels.dtype.kind not in "iu" or labels.min(initial=0) < 0:
        raise MedpfgmError(f"image file '{path}' must hold uint8 images (n, H, W, C), n integer labels and n mask entries")
    return images, labels.astype(np.int64), synthetic


def load_split(
    dataset: str,
    size: int,
    split: str = "train",
    data_root: str | Path | None = None,
    download: bool = True,
    verify: bool = True,
) -> Split:
    """Load one split of a MedMNIST dataset from the resolved root (downloading if allowed)."""
    check_dataset(dataset)
    check_size(size)
    path = ensure_file(dataset, size, resolve_root(data_root), download=download, verify=verify)
    images, labels = read_npz_split(path, split, mmap=size >= 128)
    if images.shape[1:3] != (size, size):
        raise MedpfgmError(f"data file '{path}' holds {images.shape[1]} px images, expected {size} px")
    k = len(class_names(dataset))
    if labels.min() < 0 or labels.max() >= k:
        raise MedpfgmError(f"data file '{path}': split '{split}' has labels {labels.min()}..{labels.max()}, outside 0..{k - 1} of {dataset}")
    return Split(images=images, labels=labels, dataset=dataset, size=size, name=split)


# MONAI array transforms act on any channel-first array, so one call scales a whole (n, C, H, W) batch.
_TO_UNIT_RANGE = Compose(
    [
        ScaleIntensityRange(a_min=0.0, a_max=255.0, b_min=-1.0, b_max=1.0),
        EnsureType(data_type="tensor", dtype=torch.float32, track_meta=False),
    ]
)


def to_unit_range(images: np.ndarray) -> torch.Tensor:
    """uint8 (n, H, W, C) -> float32 (n, C, H, W) in [-1, 1]."""
    return _TO_UNIT_RANGE(torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float())


def random_flips(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip each image of (n, C, H, W) left-right and up-down, each with probability 1/2.

    MONAI's RandFlip draws one decision per call; calling it per image costs more than a training
    step at B_L = 1024, so the per-image decisions are drawn here from the run's generator.
    """
    n = x.shape[0]
    flip_w = torch.rand(n, generator=generator) < 0.5
    flip_h = torch.rand(n, generator=generator) < 0.5
    x = torch.where(flip_w[:, None, None, None], x.flip(-1), x)
    return torch.where(flip_h[:, None, None, None], x.flip(-2), x)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float (n, C, H, W) in [-1, 1] -> uint8 (n, H, W, C), clipping what lies outside."""
    x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def mean_l2_norm(images: np.ndarray, max_images: int = 4096) -> float:
    """Mean Euclidean norm of images in [-1, 1] (the 'data norm' of PFGM's hyper-parameter rule)."""
    x = to_unit_range(images[:max_images])
    return float(x.flatten(1).norm(dim=1).mean())


class RandomBatches:
    """Random labelled batches from one split, reproducible from a generator.

    All randomness (indices and flips) comes from the ``torch.Generator`` passed to ``sample``, so a
    training run that saves that generator's state resumes with exactly the same batches.
    """

    def __init__(self, split: Split, flip: bool = False):
        self.split = split
        self.flip = flip

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Return images float32 (n, C, H, W) in [-1, 1] and labels int64 (n,)."""
        idx = torch.randint(len(self.split.labels), (n,), generator=generator).numpy()
        x = to_unit_range(self.split.images[idx])
        if self.flip:
            x = random_flips(x, generator)
        return x, torch.from_numpy(self.split.labels[idx])
