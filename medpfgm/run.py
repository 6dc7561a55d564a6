"""The run folder: the unit users pass around.

``config.json`` (the resolved recipe), ``checkpoints/last.pt`` (model, EMA, optimizer, RNG states),
``log.jsonl`` (one line per logged step), ``loss.png``, ``samples/``. Every command that takes
``--run`` reads the method, dataset and size from here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from medpfgm.config import RunConfig, read_run_config
from medpfgm.data import class_names, num_channels
from medpfgm.errors import MedpfgmError, shorten
from medpfgm.io import load_checkpoint
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


def build_net(cfg: RunConfig, method) -> torch.nn.Module:
    c = num_channels(cfg.dataset)
    return build_unet(cfg.net, c, method.out_channels(c), len(class_names(cfg.dataset)) if cfg.conditional else None)


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


def load_run(run_dir: str | Path, device: torch.device | str = "cpu") -> LoadedRun:
    """Load a run folder's configuration and the EMA weights of its last checkpoint."""
    paths = RunPaths(Path(run_dir))
    read_run_config(paths.root)  # a file, a missing folder or one without config.json: one line each
    if not paths.last_checkpoint.is_file():
        raise MedpfgmError(f"run folder '{paths.root}' has no checkpoint ({paths.last_checkpoint} is missing)")
    state = load_checkpoint(paths.last_checkpoint, map_location=device)
    cfg = RunConfig.from_dict(state["config"], source=f"checkpoint '{paths.last_checkpoint}'")
    method = build_method(cfg, image_shape(cfg))
    net = build_net(cfg, method).to(device)
    try:
        net.load_state_dict(state["ema"])
        step = int(state["step"])
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        raise MedpfgmError(f"checkpoint '{paths.last_checkpoint}' does not match its config ({shorten(str(exc), 100)})") from None
    broken = [name for name, p in net.state_dict().items() if p.is_floating_point() and not torch.isfinite(p).all()]
    if broken:
        raise MedpfgmError(f"checkpoint '{paths.last_checkpoint}' has NaN or infinite EMA weights ({broken[0]}, {len(broken)} tensors in all)")
    net.eval()
    return LoadedRun(paths, cfg, method, net, step)


def read_config(run_dir: str | Path) -> RunConfig:
    return read_run_config(run_dir)
