"""A ResNet-18-class image classifier for MedMNIST: the evaluation's domain feature network and the
downstream model of the augmentation benchmark.

The network is MONAI's 2-D ResNet with basic blocks [2, 2, 2, 2] (ResNet-18's layout), adapted to small
images the usual way for 28-32 px inputs: a 3x3 stride-1 stem and no max-pool. ``width`` sets the first
stage's channels (64 is ResNet-18's; the default 16, 0.7 M parameters, trains in minutes on a CPU).
A saved classifier is a folder: ``classifier.pt`` (state dict) and ``classifier.json`` (its config,
SHA-256, and test metrics); loading checks the hash and reads tensors only.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.nets import ResNet
from sklearn.metrics import balanced_accuracy_score, f1_score, recall_score, roc_auc_score
from tqdm.auto import tqdm

from medpfgm.data import random_flips, to_unit_range
from medpfgm.errors import MedpfgmError, shorten
from medpfgm.io import atomic_write, sha256_of, write_json
from medpfgm.machine import machine


@dataclass
class ClassifierConfig:
    width: int = 16  # channels of the first stage; stages have width x (1, 2, 4, 8)
    epochs: int = 10
    steps: int | None = None  # optimizer steps in all; set, it replaces epochs (equal budgets across training sets)
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 5e-4
    flip: bool = True  # random flips (every variant gets them)
    augment: bool = False  # classical augmentation: quarter turns, brightness and contrast jitter
    balanced: bool = False  # draw batches class-balanced (inverse-frequency sampling)
    reweight: bool = False  # weight the loss by inverse class frequency
    synthetic_weight: float = 1.0  # loss weight of synthetic training images (the train_synthetic mask) against real ones
    patience: int | None = None  # set: train to convergence on the validation split (see train_classifier), keep the best epoch
    monitor: str = "balanced_accuracy"  # what the converged arm watches on the validation split: MONITORS
    seed: int = 0


def build_classifier(num_classes: int, in_channels: int, width: int = 16) -> ResNet:
    """MONAI ResNet-18 layout for small 2-D images: (n, C, H, W) in [-1, 1] -> logits (n, num_classes)."""
    return ResNet(
        block="basic",
        layers=[2, 2, 2, 2],
        block_inplanes=[width, 2 * width, 4 * width, 8 * width],
        spatial_dims=2,
        n_input_channels=in_channels,
        conv1_t_size=3,
        conv1_t_stride=1,
        no_max_pool=True,
        num_classes=num_classes,
    )


def penultimate_features(net: ResNet, x: torch.Tensor) -> torch.Tensor:
    """Globally pooled features before the last linear layer: (n, 8 * width)."""
    feats = []
    handle = net.avgpool.register_forward_hook(lambda _m, _i, out: feats.append(out.flatten(1)))
    try:
        net(x)
    finally:
        handle.remove()
    return feats[0]


def classical_augment(x: torch.Tensor, generator: torch.Generator, jitter: float = 0.1) -> torch.Tensor:
    """Per image: a random quarter turn, brightness ± jitter and contrast × (1 ± jitter); x in [-1, 1], (n, C, H, W)."""
    n = x.shape[0]
    turns = torch.randint(0, 4, (n,), generator=generator)
    x = torch.stack([torch.rot90(img, int(k), dims=(-2, -1)) for img, k in zip(x, turns)])
    brightness = (torch.rand(n, 1, 1, 1, generator=generator) * 2 - 1) * jitter * 2  # [-1, 1] range is 2 wide
    contrast = 1 + (torch.rand(n, 1, 1, 1, generator=generator) * 2 - 1) * jitter
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * contrast + mean + brightness).clamp(-1, 1)


def _batch_indices(labels: np.ndarray, batch_size: int, balanced: bool, rng: np.random.Generator) -> list[np.ndarray]:
    """One epoch of index batches: a permutation, or as many inverse-frequency draws (class-balanced)."""
    n = len(labels)
    if balanced:
        counts = np.bincount(labels)
        weights = 1.0 / counts[labels]
        order = rng.choice(n, size=n, replace=True, p=weights / weights.sum())
    else:
        order = rng.permutation(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def weighted_cross_entropy(logits: torch.Tensor, y: torch.Tensor, sample_weight: torch.Tensor | None, class_weight: torch.Tensor | None) -> torch.Tensor:
    """Cross-entropy (class-weighted if ``class_weight``), averaged over the batch with per-image weights
    ``sample_weight`` (n,): sum_i w_i l_i / sum_i w_i. None: the plain mean (PyTorch's, with class weights)."""
    if sample_weight is None:
        return F.cross_entropy(logits, y, weight=class_weight)
    per_image = F.cross_entropy(logits, y, weight=class_weight, reduction="none")
    return (sample_weight * per_image).sum() / sample_weight.sum().clamp_min(1e-12)


MONITORS = ("balanced_accuracy", "loss")  # loss: the class-balanced cross-entropy, smoother than accuracy on a small split


def balanced_nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Class-balanced cross-entropy of probabilities (n, K) at int labels (n,), nats: the mean over the classes
    present of each class's mean -log p(label); every class counts alike, as in balanced accuracy."""
    nll = -np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None))
    return float(np.mean([nll[labels == c].mean() for c in np.unique(labels)]))


PLATEAU_CUTS = 2  # converged arm: the learning rate is cut tenfold at each of the first two plateaus; the third ends training


def train_classifier(
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    cfg: ClassifierConfig,
    device: torch.device | str = "cpu",
    progress: bool = True,
    synthetic: np.ndarray | None = None,
    val: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[ResNet, dict]:
    """Train on uint8 (n, H, W, C) images and int (n,) labels; returns (net in eval mode, info).

    AdamW with a one-cycle schedule over ``cfg.steps`` optimizer steps (or ``cfg.epochs`` epochs);
    cross-entropy, synthetic images (``synthetic`` mask (n,)) weighted by ``cfg.synthetic_weight``.
    With ``cfg.patience`` and ``val`` (images, labels) the classifier is trained to convergence (the
    converged arm: a fill's real images are seen as often as needed, not as often as an equal step
    budget allows): one epoch of linear warm-up, then a constant learning rate; the validation balanced
    accuracy and class-balanced loss are measured after each epoch, and when the one ``cfg.monitor`` names
    has not improved for ``patience`` epochs the
    learning rate is cut tenfold from the best epoch's weights, PLATEAU_CUTS times; the next plateau
    ends training (at most ``cfg.epochs`` epochs) and the best epoch's weights are returned. A one-cycle
    schedule would be cut by the early stop at its peak learning rate, never annealed. info holds the
    seconds, the steps, about the last epoch's mean loss and, with validation, both curves, the best
    epoch and the epochs at which the learning rate was cut.
    """
    if cfg.patience is not None and val is None:
        raise MedpfgmError("--patience needs a validation split to watch")
    if cfg.monitor not in MONITORS:
        raise MedpfgmError(f"monitor {cfg.monitor!r} is not one of {', '.join(MONITORS)}")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    net = build_classifier(num_classes, images.shape[-1], cfg.width).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = cfg.steps or cfg.epochs * -(-len(labels) // cfg.batch_size)
    class_weight = None
    if cfg.reweight:
        counts = np.bincount(labels, minlength=num_classes).astype(float)
        class_weight = torch.tensor(np.where(counts > 0, counts.sum() / (num_classes * np.maximum(counts, 1)), 0.0), dtype=torch.float32, device=device)
    steps_per_epoch = -(-len(labels) // cfg.batch_size)  # ceil
    cuts: list[int] = []  # converged arm: the (0-based) epochs after which the learning rate was cut
    if cfg.patience is None:
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total)
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / steps_per_epoch) * 0.1 ** len(cuts))
    weights = None
    if synthetic is not None and cfg.synthetic_weight != 1.0:
        weights = torch.from_numpy(np.where(synthetic, cfg.synthetic_weight, 1.0)).float()
    t0, losses, curves, best = time.perf_counter(), [], {"balanced_accuracy": [], "loss": []}, None
    curve = curves[cfg.monitor]
    sign = 1.0 if cfg.monitor == "balanced_accuracy" else -1.0  # higher is better after the sign
    bar = tqdm(total=total, desc="classifier", disable=not progress, dynamic_ncols=True)
    net.train()
    while len(losses) < total:  # epochs of shuffled (or class-balanced) batches, cut at the step budget
        for idx in _batch_indices(labels, cfg.batch_size, cfg.balanced, rng)[: total - len(losses)]:
            x = to_unit_range(images[idx])
            if cfg.flip:
                x = random_flips(x, gen)
            if cfg.augment:
                x = classical_augment(x, gen)
            y = torch.from_numpy(labels[idx]).long()
            w = weights[idx].to(device) if weights is not None else None
            loss = weighted_cross_entropy(net(x.to(device)), y.to(device), w, class_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            bar.update()
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        if cfg.patience is not None:
            probs = predict_proba(net, val[0])
            curves["balanced_accuracy"].append(classification_metrics(probs, val[1])["balanced_accuracy"])
            curves["loss"].append(balanced_nll(probs, val[1]))
            net.train()
            if best is None or sign * curve[-1] > sign * curve[best[0]]:
                best = (len(curve) - 1, {k: v.detach().clone() for k, v in net.state_dict().items()})
            elif len(curve) - 1 - max([best[0], *cuts]) >= cfg.patience:  # a plateau since the best epoch and the last cut
                if len(cuts) == PLATEAU_CUTS:
                    break
                cuts.append(len(curve) - 1)
                net.load_state_dict(best[1])
    bar.close()
    last_loss = float(np.mean(losses[-steps_per_epoch:]))  # the last epoch's steps (all of them when fewer)
    info = {"train_seconds": time.perf_counter() - t0, "machine": machine(), "final_epoch_loss": last_loss, "train_steps": len(losses)}
    if best is not None:
        net.load_state_dict(best[1])
        info.update(val_balanced_accuracy=curves["balanced_accuracy"], val_balanced_loss=curves["loss"], best_epoch=best[0] + 1, epochs_run=len(curve), lr_cut_after_epochs=[c + 1 for c in cuts])
    net.eval()
    return net, info


@torch.no_grad()
def predict_proba(net: ResNet, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Class probabilities (n, num_classes) of uint8 (n, H, W, C) images."""
    device = next(net.parameters()).device
    net.eval()
    out = [F.softmax(net(to_unit_range(images[i : i + batch_size]).to(device)), dim=1).cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(out).double().numpy()


def classification_metrics(probs: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy, balanced accuracy, macro-F1, per-class recall and macro one-vs-rest AUC."""
    pred = probs.argmax(1)
    classes = np.arange(probs.shape[1])
    present = np.unique(labels)
    auc = float("nan")
    if len(present) == probs.shape[1]:
        auc = float(roc_auc_score(labels, probs, multi_class="ovr", labels=classes))
    return {
        "accuracy": float((pred == labels).mean()),
        "balanced_accuracy": float(balanced_accuracy_score(labels, pred)),
        "macro_f1": float(f1_score(labels, pred, average="macro", labels=classes, zero_division=0)),
        "per_class_recall": [float(r) for r in recall_score(labels, pred, average=None, labels=classes, zero_division=0)],
        "auc": auc,
    }


def save_classifier(folder: str | Path, net: ResNet, cfg: ClassifierConfig, meta: dict) -> Path:
    """Write classifier.pt and classifier.json (config, hash, and ``meta`` such as dataset and test metrics)."""
    folder = Path(folder)
    weights = atomic_write(folder / "classifier.pt", lambda tmp: torch.save(net.state_dict(), tmp))
    num_classes, in_channels = net.fc.out_features, net.conv1.in_channels
    info = {"config": dataclasses.asdict(cfg), "num_classes": num_classes, "in_channels": in_channels, "sha256": sha256_of(weights), **meta}
    write_json(folder / "classifier.json", info)
    return folder


def load_classifier(folder: str | Path, device: torch.device | str = "cpu") -> tuple[ResNet, dict]:
    """Load a saved classifier (hash-checked, tensors only); returns (net in eval mode, its json)."""
    import json

    folder = Path(folder)
    weights, meta_path = folder / "classifier.pt", folder / "classifier.json"
    if not weights.is_file() or not meta_path.is_file():
        raise MedpfgmError(f"'{folder}' is not a classifier folder (needs classifier.pt and classifier.json); make one with `medpfgm classify`")
    try:
        meta = json.loads(meta_path.read_text())
        cfg = ClassifierConfig(**meta["config"])
        num_classes, in_channels, expected = meta["num_classes"], meta["in_channels"], meta["sha256"]
    except (ValueError, KeyError, TypeError) as exc:
        raise MedpfgmError(f"classifier description '{meta_path}' is corrupt ({exc})") from None
    if sha256_of(weights) != expected:
        raise MedpfgmError(f"classifier weights '{weights}' do not match the SHA-256 in {meta_path.name}: the file changed or is corrupt")
    net = build_classifier(num_classes, in_channels, cfg.width)
    try:
        net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    except Exception as exc:
        raise MedpfgmError(f"classifier weights '{weights}' cannot be loaded ({shorten(str(exc), 120)})") from None
    return net.to(device).eval(), meta
