"""Process groups for multi-process training and evaluation (``torchrun``, SLURM), kept thin.

Every function works without ``torch.distributed`` initialised: it then answers as the single
process of a group of one (rank 0 of 1), so library code calls them unconditionally.

    torchrun --nproc_per_node=2 experiments/run.py ...   # gloo on CPU, NCCL on GPUs

:func:`init_from_env` reads torchrun's variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``) or, inside a SLURM job step with several tasks and none of those
set, SLURM's (``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID``, the first node of
``SLURM_JOB_NODELIST`` as the master).
"""

from __future__ import annotations

import atexit
import os
import re
import sys
from datetime import timedelta

import torch
import torch.distributed as dist

from ._checks import ArgumentValueError

__all__ = [
    "is_distributed",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "barrier",
    "init_from_env",
    "local_device",
    "shard_range",
    "gather_cat",
    "broadcast_object",
    "all_reduce_sum",
    "exit_process_group",
]


def is_distributed() -> bool:
    """Whether a process group of more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def _slurm_env() -> dict | None:
    """torchrun-style variables from a SLURM job step with several tasks, or None."""
    env = os.environ
    if "SLURM_PROCID" not in env or int(env.get("SLURM_NTASKS", "1")) < 2:
        return None
    nodes = env.get("SLURM_JOB_NODELIST", env.get("SLURM_NODELIST", "localhost"))
    # "node[003-005,9]" -> "node003"; "a,b" -> "a"
    m = re.match(r"^([^,\[]+)(?:\[(\d+))?", nodes)
    master = m.group(1) + (m.group(2) or "") if m else "localhost"
    return {
        "RANK": env["SLURM_PROCID"],
        "WORLD_SIZE": env["SLURM_NTASKS"],
        "LOCAL_RANK": env.get("SLURM_LOCALID", "0"),
        "MASTER_ADDR": env.get("MASTER_ADDR", master),
        "MASTER_PORT": env.get("MASTER_PORT", str(29500 + int(env.get("SLURM_JOB_ID", "0")) % 1000)),
    }


def local_device() -> torch.device:
    """This process's device: GPU ``LOCAL_RANK`` (0 outside a process group) when CUDA is
    available, else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def init_from_env(backend: str | None = None, timeout_s: float = 1800.0) -> torch.device:
    """Join the process group described by the environment and return this process's device.

    With no torchrun or multi-task SLURM variables this does nothing and returns ``cuda`` when a
    GPU is visible, else ``cpu``. The backend defaults to NCCL when CUDA is available and gloo
    otherwise; each process takes GPU ``LOCAL_RANK``.
    """
    env = os.environ
    if "RANK" not in env or "WORLD_SIZE" not in env:
        slurm = _slurm_env()
        if slurm is not None:
            for k, v in slurm.items():
                env.setdefault(k, v)
    device = local_device()
    if "WORLD_SIZE" not in env or int(env["WORLD_SIZE"]) < 2:
        return device
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = backend or ("nccl" if device.type == "cuda" else "gloo")
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return device


def shard_range(n: int, rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """The contiguous slice ``[start, stop)`` of ``n`` items that ``rank`` handles: sizes differ by at
    most one, lower ranks take the extra items, and the slices of ranks 0..W-1 tile ``[0, n)``."""
    rank = get_rank() if rank is None else rank
    world_size = get_world_size() if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise ArgumentValueError("rank", rank, f"rank must be in [0, {world_size}), got {rank}")
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def gather_cat(t: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Concatenate every rank's ``t`` along ``dim`` in rank order (sizes may differ), on every
    rank, on the CPU. Without a process group returns ``t`` on the CPU."""
    t = t.detach().cpu()
    if not is_distributed():
        return t
    parts: list = [None] * get_world_size()
    dist.all_gather_object(parts, t)
    return torch.cat(parts, dim=dim)


def broadcast_object(obj, src: int = 0):
    """``obj`` from rank ``src`` on every rank (any picklable object)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The elementwise sum of ``t`` over ranks, in place, returned."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def exit_process_group() -> None:
    """End a member of a process group with ``os._exit(0)`` once all ranks are here and the exit
    handlers have run: a normal exit can abort in gloo's threads while Python tears down
    (pytorch/pytorch 190489, 179291). Does nothing in a single process."""
    if is_distributed():
        barrier()
        atexit._run_exitfuncs()
        sys.stdout.flush(), sys.stderr.flush()
        os._exit(0)
