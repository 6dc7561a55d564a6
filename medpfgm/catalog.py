"""What medpfgm knows about its datasets without loading anything: names, sizes, classes, channels.

Kept free of torch, MONAI and medmnist (whose import loads torch: seconds), so that the CLI checks its
arguments at once. The class names and channel counts are medmnist's INFO, copied; a test keeps them equal.
"""

from __future__ import annotations

from medpfgm.errors import MedpfgmError

SIZES = (28, 64, 128, 224)
CLASS_NAMES = {
    "bloodmnist": [
        "basophil", "eosinophil", "erythroblast", "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)",
        "lymphocyte", "monocyte", "neutrophil", "platelet",
    ],
    "dermamnist": [
        "actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma", "benign keratosis-like lesions",
        "dermatofibroma", "melanoma", "melanocytic nevi", "vascular lesions",
    ],
    "retinamnist": ["0", "1", "2", "3", "4"],
}  # fmt: skip
CHANNELS = {"bloodmnist": 3, "dermamnist": 3, "retinamnist": 3}
DATASETS = tuple(CLASS_NAMES)
METRIC_SPACES = ("domain", "frd", "fid")  # the feature spaces `medpfgm evaluate` scores in
METRICS = (*METRIC_SPACES, "memorization")  # what --metrics takes: the spaces and the memorization audit


def check_dataset(name: str) -> str:
    if name not in DATASETS:
        raise MedpfgmError(f"unknown dataset '{name}'; choose one of: {', '.join(DATASETS)}")
    return name


def check_size(size: int) -> int:
    if size not in SIZES:
        raise MedpfgmError(f"size {size} is not available; choose one of: {', '.join(map(str, SIZES))}")
    return size


def class_names(dataset: str) -> list[str]:
    return list(CLASS_NAMES[check_dataset(dataset)])


def num_channels(dataset: str) -> int:
    return CHANNELS[check_dataset(dataset)]


def check_class(dataset: str, class_id: int) -> int:
    names = class_names(dataset)
    if not 0 <= class_id < len(names):
        listing = ", ".join(f"{i} {n}" for i, n in enumerate(names))
        raise MedpfgmError(f"class {class_id} is out of range for {dataset}: 0..{len(names) - 1} ({listing})")
    return class_id


def parse_metrics(text: str) -> list[str]:
    """'domain,fid' -> ['domain', 'fid']; an unknown or empty list is a one-line error."""
    names = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in names if m not in METRICS]
    if bad or not names:
        raise MedpfgmError(f"unknown metric '{','.join(bad) or text}'; choose from: {', '.join(METRICS)}")
    return names
