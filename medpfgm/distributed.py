"""Several processes, one run: PyTorch DDP under `torchrun`, as the trainer and the samplers use it.

One process (no ``WORLD_SIZE`` in the environment, or 1) is the same code with a context whose rank is
0 of 1, so nothing else in the package branches on it. Under torchrun each process joins the group
(NCCL on CUDA, gloo on CPU) and takes ``cuda:LOCAL_RANK`` when it uses a GPU.

How a batch is shared: every rank draws the whole global batch from the run's shared seed (indices,
flips, noise: cheap next to the network) and keeps its own slice for the network, so K ranks × B/K
images are the same images, noise and gradients as 1 rank × B, and a recipe means the same run at any
K. PFGM's charges are the whole field batch B_L on every rank: each point's field target is the one a
single process would compute.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from medpfgm.errors import MedpfgmError


@dataclass(frozen=True)
class Context:
    """This process's place in the run: rank of world (0 of 1 alone)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0 writes checkpoints, logs, plots, samples and shows progress."""
        return self.rank == 0

    def part(self, n: int) -> slice:
        """This rank's rows of a global batch of n: equal shares, refused when n does not divide."""
        if n % self.world:
            raise MedpfgmError(f"batch size {n} does not divide among {self.world} processes; use a multiple of {self.world}")
        share = n // self.world
        return slice(self.rank * share, (self.rank + 1) * share)

    def wrap(self, net: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """``net`` in DDP (gradients all-reduced, averaged) when there are several ranks, else itself."""
        if self.world == 1:
            return net
        return torch.nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank if ``flag`` is true on any (e.g. a stop signal seen by one process)."""
        if self.world == 1:
            return flag
        t = torch.tensor([int(flag)], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def mean(self, value: torch.Tensor) -> float:
        """The mean over ranks of a scalar (a loss on each rank's rows: the global batch's loss)."""
        if self.world == 1:
            return value.item()
        t = value.detach().float().reshape(1).clone()
        dist.all_reduce(t)
        return t.item() / self.world

    def gather(self, obj) -> list | None:
        """Every rank's ``obj`` in rank order on rank 0 (None elsewhere)."""
        if self.world == 1:
            return [obj]
        out = [None] * self.world if self.main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def setup(device: torch.device) -> tuple[Context, torch.device]:
    """The context of this process, joining the torchrun group on first call; the device it should use."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Context(), device
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Context(rank, world, local), device


def current() -> Context:
    """The context of a process that has joined a group with ``setup`` (or 0 of 1)."""
    if not (dist.is_available() and dist.is_initialized()):
        return Context()
    return Context(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def teardown(ctx: Context) -> None:
    if ctx.world > 1 and dist.is_initialized():
        dist.destroy_process_group()
