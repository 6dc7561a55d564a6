"""Atomic file writes and safe checkpoint loading.

Every file medpfgm writes goes to a temporary name in the same folder first and is renamed into
place, so an interrupted run never leaves a half-written checkpoint, sample file or log behind.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from medpfgm.errors import MedpfgmError, shorten


def cache_dir() -> Path:
    """medpfgm's cache ($MEDPFGM_CACHE, default ~/.cache/medpfgm): real-image features, mapped FID weights."""
    return Path(os.environ.get("MEDPFGM_CACHE", Path.home() / ".cache" / "medpfgm"))


def ensure_dir(path: str | Path) -> Path:
    """Create ``path`` (and parents) or fail with a one-line error naming it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MedpfgmError(f"cannot create folder '{path}': {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK):
        raise MedpfgmError(f"folder '{path}' is not writable")
    return path


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and rename the result onto ``path`` (same folder, so atomic)."""
    path = Path(path)
    ensure_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise MedpfgmError(f"cannot write '{path}': {exc.strerror or exc}") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def sha256_of(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def state_digest(module: torch.nn.Module) -> str:
    """SHA-256 of a module's parameters and buffers (16 hex digits): names the weights, wherever they live."""
    digest = hashlib.sha256()
    for t in module.state_dict().values():
        digest.update(t.detach().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def write_json(path: str | Path, obj) -> Path:
    text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def append_jsonl(path: str | Path, record: dict) -> None:
    """Append one JSON line (a log line; a partial last line is skipped by readers)."""
    with open(path, "a") as fh:
        fh.write(json.dumps(record) + "\n")


def read_jsonl(path: str | Path) -> list[dict]:
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def save_checkpoint(path: str | Path, state: dict) -> Path:
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load a checkpoint as untrusted input: tensors and plain containers only (weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise MedpfgmError(f"checkpoint '{path}' does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        reason = shorten(str(exc), 120) or type(exc).__name__
        raise MedpfgmError(f"checkpoint '{path}' is corrupt or not a medpfgm checkpoint ({reason})") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise MedpfgmError(f"checkpoint '{path}' is not a medpfgm checkpoint (no model/config entries)")
    return state


def save_images_npz(path: str | Path, images: np.ndarray, labels: np.ndarray, **extra: np.ndarray) -> Path:
    """Write images in MedMNIST layout: ``images`` uint8 (n, H, W, C), ``labels`` int64 (n,)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, images=images, labels=labels, **extra)

    return atomic_write(path, write)


MODEL_DTYPES = ("float32", "float16", "bfloat16")


def tensors_sha256(tensors: dict[str, torch.Tensor], header: str = "") -> str:
    """Hex SHA-256 over ``header`` and the tensors in name order (name, dtype, shape and bytes of each)."""
    digest = hashlib.sha256(header.encode())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def signed_header(meta: dict[str, str]) -> str:
    """The header fields the model file's SHA-256 covers besides the tensors: a flipped byte in the config
    (sigma_max, say) would otherwise sample wrongly without a word."""
    return json.dumps({k: meta.get(k) for k in ("config", "step", "dtype")}, sort_keys=True)


def save_model_file(
    path: str | Path, weights: dict[str, torch.Tensor], config: dict, step: int, dtype: str = "float32", train_seconds: float = 0.0
) -> Path:
    """Write a run's sampling weights as safetensors: floating tensors cast to ``dtype``; the resolved
    config, the step, the training seconds so far and a SHA-256 over the stored tensors, config, step and
    dtype go in the header (checked by ``load_model_file``)."""
    from safetensors.torch import save_file

    if dtype not in MODEL_DTYPES:
        raise MedpfgmError(f"unknown dtype '{dtype}'; choose one of: {', '.join(MODEL_DTYPES)}")
    cast = getattr(torch, dtype)
    tensors = {k: (v.to(cast) if v.is_floating_point() else v).detach().cpu().contiguous() for k, v in weights.items()}
    meta = {"format": "medpfgm-model-1", "config": json.dumps(config, sort_keys=True), "step": str(int(step)), "train_seconds": f"{train_seconds:.3f}", "dtype": dtype}
    meta["sha256"] = tensors_sha256(tensors, signed_header(meta))
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def load_model_file(path: str | Path) -> dict:
    """Read a model file written by ``save_model_file`` as untrusted input.

    Returns {"weights": name -> float32 tensor, "config": dict, "step": int, "train_seconds": float, "dtype": str,
    "sha256": str};
    a file that is not one, is damaged, or whose tensors do not match their recorded SHA-256 is a one-line error.
    """
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise MedpfgmError(f"model file '{path}' does not exist")
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise MedpfgmError(f"model file '{path}' is corrupt or not a safetensors file ({shorten(str(exc), 100)})") from None
    if meta.get("format") != "medpfgm-model-1":
        raise MedpfgmError(f"model file '{path}' is not a medpfgm model file (no medpfgm-model-1 header)")
    if tensors_sha256(tensors, signed_header(meta)) != meta.get("sha256"):
        raise MedpfgmError(f"model file '{path}' is damaged: its tensors and header do not match the SHA-256 in its header")
    try:
        config, step, seconds = json.loads(meta["config"]), int(meta["step"]), float(meta.get("train_seconds", 0.0))
    except (KeyError, ValueError) as exc:
        raise MedpfgmError(f"model file '{path}' has a broken header ({shorten(str(exc), 80)})") from None
    weights = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    return {"weights": weights, "config": config, "step": step, "train_seconds": seconds, "dtype": meta.get("dtype", "float32"), "sha256": meta["sha256"]}
