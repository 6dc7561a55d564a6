"""The run folder: the unit users pass around.

``config.json`` (the resolved recipe), ``ema.safetensors`` (the EMA weights that sampling uses, with the
config, step and a SHA-256 of its tensors), ``checkpoints/last.pt`` (the training state: model, EMA,
optimizer, RNG states; what ``--resume`` needs), ``data.json``, ``log.jsonl`` (one line per logged step)
and ``loss.png``. Every command that takes ``--run`` reads the method, dataset and size from here. A run
shared or committed without its training state keeps everything but ``checkpoints/``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from medpfgm.config import RunConfig, read_run_config
from medpfgm.data import class_names, num_channels
from medpfgm.errors import MedpfgmError, shorten
from medpfgm.io import load_checkpoint, load_model_file, read_jsonl
from medpfgm.methods import build_method
from medpfgm.nets import build_unet


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def model(self) -> Path:
        """The EMA weights for sampling (safetensors): written at every checkpoint and by ``medpfgm export``."""
        return self.root / "ema.safetensors"

    @property
    def data(self) -> Path:
        """The record of the training split (counts, SHA-256): what the run has seen."""
        return self.root / "data.json"

    @property
    def log(self) -> Path:
        return self.root / "log.jsonl"

    @property
    def loss_plot(self) -> Path:
        return self.root / "loss.png"

    @property
    def samples(self) -> Path:
        return self.root / "samples"


def other_training_data(paths: RunPaths, split) -> str | None:
    """Why ``split`` is not what the run was trained on (per its ``data.json``), or None if it is.

    The run's images are compared by SHA-256 of images and labels; a run without a record gives None.
    """
    if not paths.data.is_file():
        return None
    saved = json.loads(paths.data.read_text())
    if saved.get("sha256") == split.fingerprint:
        return None
    return (
        f"run '{paths.root}' was trained on {saved.get('images')} {split.dataset} images with class counts "
        f"{saved.get('class_counts')}, not on this training set ({len(split.labels)} images, {split.class_counts().tolist()})"
    )


def image_shape(cfg: RunConfig) -> tuple[int, int, int]:
    return (num_channels(cfg.dataset), cfg.size, cfg.size)


def num_class_embeddings(cfg: RunConfig) -> int | None:
    """Class embeddings of the run's network: K, K + 1 with a null class (index K) for guidance, None unconditional."""
    if not cfg.conditional:
        return None
    return len(class_names(cfg.dataset)) + (1 if cfg.guidable else 0)


def build_net(cfg: RunConfig, method) -> torch.nn.Module:
    c = num_channels(cfg.dataset)
    return build_unet(cfg.net, c, method.out_channels(c), num_class_embeddings(cfg))


def select_device(name: str) -> torch.device:
    """'auto' -> CUDA when present, else CPU; 'cuda' without a GPU is a one-line error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise MedpfgmError("--device cuda asked for, but no CUDA GPU is visible; use --device auto or cpu")
    if name not in ("cpu", "cuda"):
        raise MedpfgmError(f"unknown device '{name}'; choose one of: auto, cpu, cuda")
    return torch.device(name)


@dataclass
class LoadedRun:
    """A trained run ready for sampling: its config, method and EMA network (eval mode)."""

    paths: RunPaths
    cfg: RunConfig
    method: object
    net: torch.nn.Module
    step: int

    @property
    def class_names(self) -> list[str]:
        return class_names(self.cfg.dataset)


def load_weights(paths: RunPaths, device: torch.device | str = "cpu", prefer_checkpoint: bool = False) -> dict:
    """A run's EMA weights from its model file, else its training state (first, with ``prefer_checkpoint``):
    {"weights", "config" (dict), "step", "train_seconds", "source" (the file read)}."""
    if paths.model.is_file() and not (prefer_checkpoint and paths.last_checkpoint.is_file()):
        model = load_model_file(paths.model)
        return {**model, "source": paths.model}
    if not paths.last_checkpoint.is_file():
        raise MedpfgmError(f"run folder '{paths.root}' has no model ({paths.model.name}) and no checkpoint ({paths.last_checkpoint} is missing)")
    state = load_checkpoint(paths.last_checkpoint, map_location=device)
    if not isinstance(state.get("ema"), dict) or "step" not in state:
        raise MedpfgmError(f"checkpoint '{paths.last_checkpoint}' is not a medpfgm checkpoint (no EMA weights or step)")
    keys = ("config", "step", "train_seconds")
    return {"weights": state["ema"], **{k: state.get(k, 0.0) for k in keys}, "source": paths.last_checkpoint}


def load_run(run_dir: str | Path, device: torch.device | str = "cpu") -> LoadedRun:
    """Load a run folder's configuration and EMA weights (``ema.safetensors``, else ``checkpoints/last.pt``)."""
    paths = RunPaths(Path(run_dir))
    read_run_config(paths.root)  # a file, a missing folder or one without config.json: one line each
    loaded = load_weights(paths, device)
    source = loaded["source"]
    cfg = RunConfig.from_dict(loaded["config"], source=f"'{source}'")
    method = build_method(cfg, image_shape(cfg))
    net = build_net(cfg, method).to(device)
    try:
        net.load_state_dict(loaded["weights"])
        step = int(loaded["step"])
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        raise MedpfgmError(f"'{source}' does not match its config ({shorten(str(exc), 100)})") from None
    broken = [name for name, p in net.state_dict().items() if p.is_floating_point() and not torch.isfinite(p).all()]
    if broken:
        raise MedpfgmError(f"'{source}' has NaN or infinite EMA weights ({broken[0]}, {len(broken)} tensors in all)")
    net.eval()
    return LoadedRun(paths, cfg, method, net, step)


def read_config(run_dir: str | Path) -> RunConfig:
    return read_run_config(run_dir)


def training_seconds(run_dir: str | Path, step: int | None = None) -> float | None:
    """Seconds of training the run's log records up to ``step`` (its last logged step at or before it; default:
    the last logged step), or None when the log has none (a run without ``log.jsonl``)."""
    log = RunPaths(Path(run_dir)).log
    records = read_jsonl(log) if log.is_file() else []  # skips a line a killed training left half-written
    seconds = [r["train_seconds"] for r in records if "train_seconds" in r and (step is None or r.get("step", 0) <= step)]
    return float(seconds[-1]) if seconds else None
