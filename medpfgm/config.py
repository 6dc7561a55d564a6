"""Run configuration: a recipe (TOML, human-readable) resolved into dataclasses and saved per run.

A recipe names the method, dataset and size and sets the backbone, training and method constants.
``recipes/<method>/<dataset>_<size>.toml`` is the default for that combination; ``--recipe`` picks
another file. The resolved configuration (data-derived constants filled in) is saved as the run's
``config.json`` so that every later command reads what ``train`` knew.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medpfgm.catalog import check_dataset, check_size
from medpfgm.errors import MedpfgmError

METHODS = ("pfgm", "pfgmpp", "ddpm", "vapo")
SOLVERS = {"pfgm": ("rk45", "euler", "heun"), "pfgmpp": ("heun", "euler", "rk45"), "ddpm": ("ddpm", "ddim"), "vapo": ("rk45", "heun", "euler")}
# value rules of recipe fields ("table.field"): what a run needs to make sense, checked when a recipe loads
POSITIVE = ("train.steps", "train.batch_size", "train.lr", "train.log_every", "train.checkpoint_every", "train.checkpoint_minutes",
            "pfgm.field_batch", "pfgm.sigma", "pfgm.tau", "pfgm.z_min", "pfgmpp.sigma_min", "pfgmpp.sigma_max", "pfgmpp.sigma_data",
            "pfgmpp.rho", "ddpm.num_train_timesteps", "ddpm.beta_start", "ddpm.beta_end", "sample.steps", "sample.rtol", "sample.atol",
            "sample.batch_size", "net.num_res_blocks", "net.norm_num_groups", "net.num_head_channels", "vapo.t_eps")  # fmt: skip
NON_NEGATIVE = ("train.weight_decay", "train.warmup_steps", "train.grad_clip", "train.ema_rampup", "pfgm.gamma", "pfgm.z_exp", "pfgmpp.p_std")
PFGM_CHOICES = {"time_input": ("lnz", "z"), "input_scale": ("raw", "edm"), "loss_reduction": ("mean", "half_sum")}


@dataclass
class NetConfig:
    """Backbone size. ``channels`` has one entry per resolution level (each but the last halves H, W)."""

    channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    num_res_blocks: int = 1
    attention_levels: list[bool] = field(default_factory=lambda: [False, False, True])
    norm_num_groups: int = 16
    num_head_channels: int = 32


@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 64
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 200
    grad_clip: float = 1.0
    ema_decay: float = 0.999  # sets the EMA half-life: ln 0.5 / ln decay steps
    ema_rampup: float = 0.0  # > 0: half-life at most this fraction of the steps so far (EDM: 0.05); 0: plain EMA
    flip: bool = True
    amp: bool = False  # bfloat16 autocast for the network (CUDA or CPU); targets and physics stay float32/64
    log_every: int = 10
    checkpoint_every: int = 250
    checkpoint_minutes: float = 2.0  # also checkpoint when this long has passed since the last one: a kill loses minutes, not hours
    label_dropout: float = 0.0  # > 0: this fraction of labels is replaced by a null class K, for classifier-free guidance


@dataclass
class PFGMConfig:
    """PFGM (D = 1) constants; m_max, z_max and upper_norm are derived from the data when left unset."""

    field_batch: int = 1024
    field_chunk: int | None = None
    sigma: float = 0.01
    tau: float = 0.03
    gamma: float = 5.0
    restrict_m: bool = True
    z_min: float = 1e-3
    z_exp: float = 1.0
    z_loss_weight: float | None = None  # weight of the v_z term; None = N (as much as all of v_x); 1 = official
    time_input: str = "lnz"  # the network's time input: "lnz" (ln z mapped to 0..1000) or "z" (raw z, official)
    input_scale: str = "raw"  # the network's input: "raw" (official) or "edm" (y / sqrt(z^2 + 0.25), PFGM++ D = 1's c_in)
    loss_reduction: str = "mean"  # "mean" over the N + 1 outputs, or "half_sum": 0.5 x their sum (official; see methods/pfgm.py)
    m_max: int | None = None
    z_max: float | None = None
    upper_norm: float | None = None
    data_norm: float | None = None


@dataclass
class PFGMPPConfig:
    """PFGM++ constants (EDM's defaults). ``aug_dim`` is D: 1, any integer >= 2, or "inf" (EDM)."""

    aug_dim: int | str = 128
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    p_mean: float = -1.2
    p_std: float = 1.2
    sigma_data: float = 0.5


@dataclass
class DDPMConfig:
    """DDPM baseline through MONAI's schedulers (epsilon prediction)."""

    num_train_timesteps: int = 1000
    schedule: str = "linear_beta"
    beta_start: float = 1e-4
    beta_end: float = 2e-2
    clip_sample: bool = True


@dataclass
class VAPOConfig:
    """VAPO (variational potential flow): the path x_t = t x0 + (1 - t) eps from noise (t = 0) to data (t = 1);
    training draws t ~ U(0, 1 - t_eps), sampling integrates from t = 0 to 1 - t_eps. The potential divides by
    max(1 - t, scale_floor) (see methods/vapo.py)."""

    t_eps: float = 1e-3
    scale_floor: float = 0.05


@dataclass
class SampleConfig:
    solver: str = "rk45"
    steps: int = 100
    rtol: float = 1e-4
    atol: float = 1e-4
    batch_size: int = 256


@dataclass
class RunConfig:
    method: str = "pfgm"
    dataset: str = "bloodmnist"
    size: int = 28
    seed: int = 0
    conditional: bool = True  # False: the network ignores labels and PFGM's field uses every charge
    net: NetConfig = field(default_factory=NetConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    pfgm: PFGMConfig = field(default_factory=PFGMConfig)
    pfgmpp: PFGMPPConfig = field(default_factory=PFGMPPConfig)
    ddpm: DDPMConfig = field(default_factory=DDPMConfig)
    vapo: VAPOConfig = field(default_factory=VAPOConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def guidable(self) -> bool:
        """Trained with a null class (label dropout): classifier-free guidance can sample it."""
        return self.conditional and self.train.label_dropout > 0

    @property
    def label(self) -> str:
        """The model's short name in run folders and reports: pfgm, pfgmpp_d128, pfgmpp_dinf, ddpm."""
        return f"pfgmpp_d{self.pfgmpp.aug_dim}" if self.method == "pfgmpp" else self.method

    def model_name(self, variant: Variant) -> str:
        """The name a sampled model is scored under: the label, "_ld0.1" for a run trained with label
        dropout 0.1 (another model than the run without), then the variant's suffix ("_cfg_w2")."""
        dropout = f"_ld{self.train.label_dropout:g}" if self.train.label_dropout else ""
        return f"{self.label}{dropout}{variant.suffix}"

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> RunConfig:
        cfg = _build(cls, data, source)
        if cfg.method not in METHODS:
            raise MedpfgmError(f"unknown method '{cfg.method}' in {source}; choose one of: {', '.join(METHODS)}")
        check_dataset(cfg.dataset)
        check_size(cfg.size)
        try:
            cfg.pfgmpp.aug_dim = canonical_aug_dim(cfg.pfgmpp.aug_dim)
        except MedpfgmError as exc:
            raise MedpfgmError(f"{source}: pfgmpp.{exc}") from None
        _check_values(cfg, source)
        return cfg


def _check_values(cfg: RunConfig, source: str) -> None:
    """The value rules (POSITIVE, NON_NEGATIVE, ...): a one-line error naming the field and the source."""

    def bad(name: str, value, allowed: str) -> MedpfgmError:
        return MedpfgmError(f"{source}: {name} = {value!r} is not allowed; {allowed}")

    for name in POSITIVE + NON_NEGATIVE:
        table, key = name.split(".")
        value = getattr(getattr(cfg, table), key)
        if value is not None and not (math.isfinite(value) and (value > 0 if name in POSITIVE else value >= 0)):
            raise bad(name, value, "it must be a finite number " + ("> 0" if name in POSITIVE else ">= 0"))
    if not 0 <= cfg.train.label_dropout < 1:
        raise bad("train.label_dropout", cfg.train.label_dropout, "it must lie in [0, 1)")
    if not cfg.vapo.t_eps < 0.5:
        raise bad("vapo.t_eps", cfg.vapo.t_eps, "it must be a small positive number below 0.5")
    if not 0 < cfg.vapo.scale_floor < 1:
        raise bad("vapo.scale_floor", cfg.vapo.scale_floor, "it must lie strictly between 0 and 1")
    if not 0 < cfg.train.ema_decay < 1:
        raise bad("train.ema_decay", cfg.train.ema_decay, "it must lie strictly between 0 and 1")
    if not cfg.net.channels or any(c <= 0 for c in cfg.net.channels) or len(cfg.net.attention_levels) != len(cfg.net.channels):
        raise bad("net.channels", cfg.net.channels, "give one positive width per level and as many attention_levels")
    if cfg.sample.solver not in SOLVERS[cfg.method]:
        raise bad("sample.solver", cfg.sample.solver, f"{cfg.method} samples with one of: {', '.join(SOLVERS[cfg.method])}")
    for name, allowed in PFGM_CHOICES.items():
        if getattr(cfg.pfgm, name) not in allowed:
            raise bad(f"pfgm.{name}", getattr(cfg.pfgm, name), f"choose one of: {', '.join(allowed)}")


def parse_aug_dim(value: int | float | str) -> float:
    """D of PFGM++: 1, an integer >= 2, or "inf" / inf (EDM). Returns it as a float (math.inf for inf)."""
    text = str(value).strip().lower()
    if text in ("inf", "infinity"):
        return math.inf
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1 or str(number) != text:
        raise MedpfgmError(f"aug_dim (D) must be 1, an integer >= 2, or inf; got '{value}'")
    return float(number)


def canonical_aug_dim(value: int | float | str) -> int | str:
    """D as stored in configs: an int, or the string "inf" (JSON has no infinity)."""
    d = parse_aug_dim(value)
    return "inf" if math.isinf(d) else int(d)


def _build(cls, data: dict[str, Any], source: str):
    """Build dataclass ``cls`` from a dict, refusing unknown keys (a typo must not pass silently)."""
    if not isinstance(data, dict):
        raise MedpfgmError(f"{source}: expected a table for {cls.__name__}, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise MedpfgmError(f"{source}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(fields)}")
    kwargs, hints = {}, typing.get_type_hints(cls)
    for name, value in data.items():
        if not _has_type(value, hints[name]):
            raise MedpfgmError(f"{source}: {name} = {value!r} has the wrong type; expected {_type_name(hints[name])}")
        default = getattr(cls(), name)
        kwargs[name] = _build(type(default), value, f"{source} [{name}]") if dataclasses.is_dataclass(default) else value
    return cls(**kwargs)


def recipes_dir() -> Path:
    """``recipes/`` of a source checkout, or the copy packaged inside an installed wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "recipes", here / "recipes"):
        if candidate.is_dir():
            return candidate
    raise MedpfgmError("cannot find the recipes folder; pass --recipe FILE")


def default_recipe(method: str, dataset: str, size: int) -> Path:
    if method not in METHODS:
        raise MedpfgmError(f"unknown method '{method}'; choose one of: {', '.join(METHODS)}")
    return recipes_dir() / method / f"{check_dataset(dataset)}_{check_size(size)}.toml"


def load_recipe(path: str | Path) -> RunConfig:
    path = Path(path)
    if not path.is_file():
        raise MedpfgmError(f"recipe '{path}' does not exist")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise MedpfgmError(f"recipe '{path}' is not valid TOML: {exc}") from None
    return RunConfig.from_dict(data, source=f"recipe '{path}'")


def read_run_config(run_dir: str | Path) -> RunConfig:
    """The saved configuration of a run folder (no weights loaded); a one-line error for anything else."""
    root = Path(run_dir)
    if root.is_file():
        raise MedpfgmError(f"'{root}' is a file, not a run folder; give the folder that `medpfgm train --run DIR` made")
    if not root.is_dir():
        raise MedpfgmError(f"run folder '{root}' does not exist; train one with `medpfgm train --run DIR`")
    path = root / "config.json"
    if not path.is_file():
        raise MedpfgmError(f"'{root}' is not a run folder (no config.json); train one with `medpfgm train --run DIR`")
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise MedpfgmError(f"'{path}' is not valid JSON ({exc})") from None
    return RunConfig.from_dict(data, source=str(path))


def default_run_dir(method: str, dataset: str, size: int) -> Path:
    """Where `medpfgm train` puts a run of the default recipe: runs/<label>_<dataset>_<size>."""
    cfg = load_recipe(default_recipe(method, dataset, size))
    return Path("runs") / f"{cfg.label}_{dataset}_{size}"


def run_folders(roots: tuple[str, ...] = ("runs", "reports")) -> list[str]:
    """Run folders (those with a config.json) under ``roots`` of the working directory, sorted."""
    found = {str(p.parent) for root in roots if Path(root).is_dir() for p in Path(root).glob("**/config.json")}
    return sorted(f for f in found if (Path(f) / "checkpoints").is_dir())


def resolve_run_dir(run_dir: str | None, method: str, dataset: str, size: int) -> Path:
    """``run_dir``, else the default run folder of method/dataset/size if it exists, else a one-line
    error that lists the run folders found."""
    if run_dir:
        return Path(run_dir)
    default = default_run_dir(method, dataset, size)
    if (default / "config.json").is_file():
        return default
    found = run_folders()
    listing = f"run folders found: {', '.join(found)}" if found else "no run folder found; train one with `medpfgm train`"
    raise MedpfgmError(f"no --run given and the default run folder '{default}' (--method {method} --dataset {dataset} --size {size}) does not exist; {listing}")


def _has_type(value, hint) -> bool:
    """Whether a recipe value fits a field's annotation (int, float, bool, str, list[...], X | None, a table)."""
    if dataclasses.is_dataclass(hint):
        return isinstance(value, dict)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_has_type(value, a) for a in args)
    if origin is list:
        return isinstance(value, list) and all(_has_type(v, args[0]) for v in value)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(hint) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


@dataclass(frozen=True)
class Variant:
    """Sampler options beyond solver and steps. ``guidance`` w: classifier-free guidance,
    f = f(x, c) + w (f(x, c) - f(x, null)), for runs trained with label dropout (w = 0: unguided);
    ``project``: the projection step (our reading of Ghimire et al. 2023), for PFGM++ with Euler and
    DDPM/DDIM. ``bf16``: the network in bfloat16 autocast — the same sampler at a cheaper arithmetic,
    so it keeps the model's name and shows in the sample files' names and the records (``precision``)."""

    guidance: float = 0.0
    project: bool = False
    bf16: bool = False

    @property
    def suffix(self) -> str:
        """What it adds to a model's name in file names and reports: "", "_proj", "_cfg_w2", ..."""
        return ("_proj" if self.project else "") + (f"_cfg_w{self.guidance:g}" if self.guidance else "")

    @property
    def precision(self) -> str:
        return "bfloat16" if self.bf16 else "float32"

    @property
    def sample_tag(self) -> str:
        """What it adds to sample file names and resume keys: the suffix, and "_bf16" for bf16 arithmetic."""
        return self.suffix + ("_bf16" if self.bf16 else "")


def check_variant(cfg: RunConfig, solver: str, variant: Variant) -> Variant:
    """``variant`` if the run (its config ``cfg``) and solver allow it, else a one-line error saying what does."""
    if not (math.isfinite(variant.guidance) and variant.guidance >= 0):
        raise MedpfgmError(f"--guidance must be a finite weight >= 0 (0: unguided), got {variant.guidance}")
    if variant.guidance and not cfg.guidable:
        raise MedpfgmError(
            f"--guidance {variant.guidance:g} needs a class-conditional run trained with a null class "
            f"(recipe [train] label_dropout > 0); this {cfg.label} run has label_dropout {cfg.train.label_dropout:g}"
        )
    if variant.project and not ((cfg.method == "pfgmpp" and solver == "euler") or cfg.method == "ddpm"):
        raise MedpfgmError(f"--project works with pfgmpp and --solver euler, or with ddpm (ddpm, ddim); not with {cfg.method} and {solver}")
    return variant
