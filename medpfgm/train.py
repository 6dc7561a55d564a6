"""The one training loop for every method: AdamW, warm-up, clipping, EMA, checkpoints, exact resume."""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import threading
import time
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel
from tqdm.auto import tqdm

from medpfgm import distributed
from medpfgm.config import RunConfig
from medpfgm.distributed import Context
from medpfgm.data import RandomBatches, load_split, mean_l2_norm
from medpfgm.errors import Interrupted, MedpfgmError
from medpfgm.figures import plot_loss
from medpfgm.io import append_jsonl, atomic_write, ensure_dir, load_checkpoint, load_model_file, read_jsonl, save_checkpoint, save_model_file, write_json
from medpfgm.methods import build_method
from medpfgm.methods.pfgm import resolve_scales
from medpfgm.nets import count_parameters
from medpfgm.run import RunPaths, build_net, image_shape, num_class_embeddings, other_training_data


def resolve_config(cfg: RunConfig, train_images) -> RunConfig:
    """Fill the data-derived constants of the method (PFGM's M, z_max, upper_norm)."""
    if cfg.method == "pfgm":
        n_dim = math.prod(image_shape(cfg))
        return dataclasses.replace(cfg, pfgm=resolve_scales(cfg.pfgm, mean_l2_norm(train_images), n_dim))
    return cfg


def ema_decay_at(num_averaged: int, decay: float, rampup: float) -> float:
    """Decay of the EMA update after ``num_averaged`` updates (EDM's ramp-up).

    ``decay`` fixes the half-life, ln 0.5 / ln decay steps (693 at 0.999); with ``rampup`` > 0 the
    half-life is at most ``rampup`` x the steps so far, so a short run averages its recent weights, not
    its first ones (a plain EMA from the first weights keeps decay^n of them: 22 % after 1,500 steps).
    ``rampup`` = 0 is the plain EMA (runs made before the option keep it).
    """
    halflife = math.log(0.5) / math.log(decay)
    if rampup > 0:
        halflife = min(halflife, rampup * num_averaged)
    return 0.5 ** (1.0 / halflife)


def ema_update(decay: float, rampup: float):
    """``multi_avg_fn`` for torch's ``AveragedModel``: p_ema <- lerp(p_ema, p, 1 - ema_decay_at(n))."""

    @torch.no_grad()
    def update(ema_params: list[torch.Tensor], params: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        torch._foreach_lerp_(ema_params, params, 1.0 - ema_decay_at(int(num_averaged), decay, rampup))

    return update


class Trainer:
    """Owns the model, EMA, optimizer, schedule and the two generators (data on CPU, noise on device).

    Everything that decides the next loss is in ``state_dict``, so a resumed run continues exactly.
    """

    def __init__(self, cfg: RunConfig, train_split, device: torch.device, ctx: Context = Context()):
        self.cfg, self.device, self.ctx = cfg, device, ctx
        self.method = build_method(cfg, image_shape(cfg))
        self.net = build_net(cfg, self.method).to(device)
        self.model = ctx.wrap(self.net, device)  # what the loss runs: the net itself, or DDP around it
        self.ema = AveragedModel(self.net, multi_avg_fn=ema_update(cfg.train.ema_decay, cfg.train.ema_rampup), use_buffers=True)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
        warmup = max(1, cfg.train.warmup_steps)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: min(1.0, (s + 1) / warmup))
        self.batches = RandomBatches(train_split, flip=cfg.train.flip)
        self.data_gen = torch.Generator().manual_seed(cfg.seed)
        self.noise_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
        self.step, self.train_seconds = 0, 0.0
        self.amp = cfg.train.amp  # bfloat16 autocast of the network, on CUDA and on CPU alike

    def train_step(self) -> tuple[float, float]:
        """One optimizer step; returns (loss, gradient norm before clipping)."""
        self.net.train()
        images, labels = self.batches.sample(self.method.data_batch_size(self.cfg.train.batch_size), self.data_gen)
        images, labels = images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
        part = self.ctx.part(self.cfg.train.batch_size)  # every rank drew the global batch; it trains on its rows
        cond = self.conditioning(labels[: self.cfg.train.batch_size])
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            loss = self.method.loss(self.model, images, labels, self.noise_gen, part, cond)
        if not torch.isfinite(loss):
            raise MedpfgmError(f"loss became {loss.item()} at step {self.step + 1}; lower the learning rate or check the data")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.cfg.train.grad_clip)
        self.opt.step()
        self.sched.step()
        self.ema.update_parameters(self.net)
        self.step += 1
        return self.ctx.mean(loss.detach()), grad_norm.item()  # the global batch's loss on every rank

    def conditioning(self, labels: torch.Tensor) -> torch.Tensor:
        """The labels the network is given for the B trained images (B,): with ``label_dropout`` p, each is
        replaced by the null class K with probability p (drawn for the global batch from the data stream,
        so every rank agrees; nothing is drawn when p = 0, which keeps older runs' streams)."""
        p = self.cfg.train.label_dropout
        if not self.cfg.guidable:
            return labels
        drop = (torch.rand(len(labels), generator=self.data_gen) < p).to(labels.device)
        return labels.masked_fill(drop, num_class_embeddings(self.cfg) - 1)

    def state_dict(self) -> dict:
        return {
            "config": self.cfg.to_dict(),
            "step": self.step,
            "train_seconds": self.train_seconds,
            "model": self.net.state_dict(),
            "ema": self.ema.module.state_dict(),
            "ema_n_averaged": self.ema.n_averaged,
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "data_rng": self.data_gen.get_state(),
            "noise_rng": self.noise_gen.get_state(),
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["model"])
        self.ema.module.load_state_dict(state["ema"])
        self.ema.n_averaged.copy_(state["ema_n_averaged"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.data_gen.set_state(state["data_rng"])
        self.noise_gen.set_state(state["noise_rng"].to(self.noise_gen.get_state().device))
        torch.set_rng_state(state["torch_rng"])
        self.step, self.train_seconds = int(state["step"]), float(state["train_seconds"])

    def continue_from_weights(self, weights: dict, step: int, train_seconds: float = 0.0) -> None:
        """Start from a model file's EMA weights at ``step`` without its training state: network and EMA
        both take the weights, AdamW starts fresh, the schedule stands at ``step`` (past its warm-up), the
        EMA counts ``step`` updates (its ramp-up as if unbroken), and both random streams are re-seeded
        from (seed, step). Not bit-exact with the original run; its log says so."""
        self.net.load_state_dict(weights)
        self.ema.module.load_state_dict(weights)
        self.ema.n_averaged.fill_(step)
        self.sched.last_epoch = step
        for group, base, factor in zip(self.opt.param_groups, self.sched.base_lrs, self.sched.lr_lambdas):
            group["lr"] = base * factor(step)
        self.data_gen.manual_seed(self.cfg.seed * 1_000_003 + step)
        self.noise_gen.manual_seed(self.cfg.seed * 1_000_003 + step + 1)
        self.step, self.train_seconds = step, train_seconds

    def model_weights(self) -> dict:
        return self.ema.module.state_dict()


class StopSignals:
    """SIGINT (Ctrl-C) and SIGTERM (`kill`, a scheduler, torchrun passing one on) as a flag that the loop
    reads between steps, so the checkpoint it saves is a whole step, on one rank for all. A second
    Ctrl-C stops at once. Outside the main thread (no signals there) it never fires."""

    def __init__(self):
        self.signum: int | None = None
        self.previous = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._note)
        return self

    def _note(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def prepare_run(
    run_dir: str | Path, cfg: RunConfig, resume: bool | str, steps: int | None = None, ctx: Context = Context()
) -> tuple[RunPaths, RunConfig, dict | None]:
    """Check the run folder against --resume and return (paths, config, state or None).

    The state is the checkpoint's (exact resume) or, for a run shared without its training state, the
    model file's ({"weights", "config", "step", ...}: continued from its EMA weights). A resumed run keeps
    its saved configuration, step target included; ``steps`` (when given) sets the target, of a new run
    and of a resumed one (e.g. to extend a finished run). ``resume="auto"`` resumes when the folder holds
    either file and starts otherwise (what a resumable benchmark queue wants).
    """
    paths = RunPaths(Path(run_dir))
    holds_run = paths.last_checkpoint.is_file() or paths.model.is_file()
    if resume == "auto":
        resume = holds_run
    for stale in paths.checkpoints.glob(".*.tmp") if paths.checkpoints.is_dir() and ctx.main else []:
        stale.unlink(missing_ok=True)  # a checkpoint write cut short by a kill: the last complete one stands
    state = None
    if resume:
        if paths.last_checkpoint.is_file():
            state = load_checkpoint(paths.last_checkpoint)
        elif paths.model.is_file():
            state = load_model_file(paths.model)
        else:
            raise MedpfgmError(f"--resume: run folder '{paths.root}' has no checkpoint and no {paths.model.name} to continue from")
        cfg = RunConfig.from_dict(state["config"], source=f"run '{paths.root}'")
        if paths.log.is_file() and ctx.main:  # drop lines logged after the checkpoint: they will be logged again
            kept = [r for r in read_jsonl(paths.log) if r["step"] <= state["step"]]
            atomic_write(paths.log, lambda tmp: tmp.write_text("".join(json.dumps(r) + "\n" for r in kept)))
    elif holds_run:
        raise MedpfgmError(f"run folder '{paths.root}' already holds a trained run; pass --resume or choose another --run")
    elif ctx.main:
        paths.log.unlink(missing_ok=True)  # lines of an attempt killed before its first checkpoint
    if steps is not None:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=steps))
    return paths, cfg, state


def record_training_data(paths: RunPaths, split, resume: bool) -> None:
    """Write ``data.json``; a resumed run must see the same images it was trained on."""
    mismatch = other_training_data(paths, split) if resume else None
    if mismatch:
        raise MedpfgmError(f"--resume: {mismatch}; point --data-root at the data it was trained on")
    write_json(paths.data, split.record())


def train(
    run_dir: str | Path,
    cfg: RunConfig,
    device: torch.device,
    resume: bool | str = False,
    data_root=None,
    verify: bool = True,
    progress: bool = True,
    steps: int | None = None,
) -> dict:
    """Train ``cfg`` into ``run_dir`` until cfg.train.steps; returns a summary dict.

    With ``resume`` the checkpoint's own configuration is used and ``steps`` (if given) sets its target;
    ``resume="auto"`` resumes a folder that holds a run and starts an empty one.
    """
    ctx, device = distributed.setup(device)
    paths, cfg, state = prepare_run(run_dir, cfg, resume, steps, ctx)
    split = load_split(cfg.dataset, cfg.size, "train", data_root, verify=verify)
    if ctx.main:
        record_training_data(paths, split, resume)
        ensure_dir(paths.checkpoints)
    if state is None:
        cfg = resolve_config(cfg, split.images)
    ctx.part(cfg.train.batch_size)  # a batch that does not divide among the ranks is refused before any step
    torch.manual_seed(cfg.seed)
    trainer = Trainer(cfg, split, device, ctx)
    if state is not None and "weights" in state:  # a shared run without its training state
        trainer.continue_from_weights(state["weights"], state["step"], state["train_seconds"])
        if ctx.main:
            append_jsonl(paths.log, {"step": trainer.step, "event": f"continued from {paths.model.name} ({state['dtype']}): fresh AdamW and random streams, not bit-exact"})
    elif state is not None:
        trainer.load_state_dict(state)
    if ctx.main:
        write_json(paths.config, cfg.to_dict())
    tc = cfg.train
    desc = f"{cfg.method} {cfg.dataset} {cfg.size}px" + (f" ({ctx.world} processes)" if ctx.world > 1 else "")
    bar = tqdm(total=tc.steps, initial=trainer.step, desc=desc, disable=not (progress and ctx.main), dynamic_ncols=True)
    window, started = [], time.perf_counter()
    saved_at = time.monotonic()

    def save() -> None:
        """The training state (for --resume), then the model file (for sampling); rank 0 alone writes."""
        if ctx.main:
            save_checkpoint(paths.last_checkpoint, trainer.state_dict())
            save_model_file(paths.model, trainer.model_weights(), cfg.to_dict(), trainer.step, train_seconds=trainer.train_seconds)

    with StopSignals() as stop:
        while trainer.step < tc.steps:
            if ctx.any(stop.signum is not None, device):  # every rank stops after the same whole step
                save()
                bar.close()
                error = Interrupted(f"interrupted at step {trainer.step}; saved {paths.last_checkpoint}, continue with --resume")
                error.exit_code = 128 + (stop.signum or signal.SIGTERM)  # 130 for Ctrl-C, 143 for SIGTERM, as shells report them
                raise error
            t0 = time.perf_counter()
            loss, grad_norm = trainer.train_step()
            trainer.train_seconds += time.perf_counter() - t0
            window.append(loss)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
            if ctx.main and (trainer.step % tc.log_every == 0 or trainer.step == tc.steps):
                record = {
                    "step": trainer.step,
                    "loss": sum(window) / len(window),
                    "last_loss": loss,
                    "grad_norm": grad_norm,
                    "lr": trainer.sched.get_last_lr()[0],
                    "train_seconds": round(trainer.train_seconds, 3),
                }
                append_jsonl(paths.log, record)
                window = []
            due = time.monotonic() - saved_at >= 60 * tc.checkpoint_minutes
            if trainer.step % tc.checkpoint_every == 0 or trainer.step == tc.steps or due:
                save()
                saved_at = time.monotonic()
    bar.close()
    if ctx.main:
        plot_loss(paths.log, paths.loss_plot, title=paths.root.name)
    ctx.barrier()  # no rank leaves (and, under torchrun, ends the group) before rank 0 has written
    return {
        "run": str(paths.root),
        "step": trainer.step,
        "parameters": count_parameters(trainer.net),
        "train_seconds": trainer.train_seconds,
        "seconds_this_call": time.perf_counter() - started,
        "device": str(device),
    }
