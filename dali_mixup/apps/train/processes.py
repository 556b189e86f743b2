"""The trainer's processes: one per device under torchrun (DDP), their place in the run (``Context``), and the
two collective operations the trainer needs (sums of numbers, gathering objects)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List

import torch
import torch.distributed as dist


@dataclass
class Context:
    """The process's place in the run: rank, world size, device; ``owns_group``: this run started the
    process group (and ends it)."""

    rank: int
    world: int
    device: torch.device
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str) -> Context:
    """in: --device (auto|gpu|cpu) -> out: the Context; joins torchrun's process group (NCCL on GPUs, gloo on
    CPUs) unless one is already running."""
    want_gpu = device == "gpu" or (device == "auto" and torch.cuda.is_available())
    if device == "gpu" and not torch.cuda.is_available():
        raise ValueError("--device gpu: torch sees no CUDA device")
    owns = False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if want_gpu else "gloo")
        owns = True
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    if want_gpu:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        return Context(rank, world, torch.device("cuda", local_rank), owns)
    return Context(rank, world, torch.device("cpu"), owns)


def teardown(ctx: Context) -> None:
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def all_sum(values, device) -> List[float]:
    """in: numbers of this rank -> out: their sums over all ranks."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t.tolist()


def all_gather(obj, world) -> list:
    if dist.is_available() and dist.is_initialized():
        out = [None] * world
        dist.all_gather_object(out, obj)
        return out
    return [obj]

