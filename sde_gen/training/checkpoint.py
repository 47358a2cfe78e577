"""Checkpoint files: atomic writes, rotation, reading with clear errors, recovery from torn files."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from .. import distributed as dist
from .._checks import check_int

__all__ = [
    "CheckpointError",
    "Checkpoints",
    "save_atomic",
    "read_checkpoint",
    "list_checkpoints",
    "CKPT_PATTERN",
]

CKPT_PATTERN = re.compile(r"^ckpt_(\d{8})\.pt$")

#: What every trainer checkpoint holds (``read_checkpoint`` refuses a file without them).
CKPT_KEYS = ("step", "model", "ema", "optimizer", "data", "noise_gen")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: unreadable (truncated, corrupt, not a checkpoint) or written
    for another model. The message names the file."""


def save_atomic(obj, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``:
    a crash leaves either the old file or the new one, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def _upgrade(state: dict) -> dict:
    """A checkpoint of sde_gen 0.1 (data order at the top level) in the current layout."""
    if "data" not in state and {"data_gen", "perm", "pos"} <= set(state):
        state = dict(state)
        state["data"] = {
            "generator": state.pop("data_gen"),
            "perm": state.pop("perm"),
            "pos": state.pop("pos"),
        }
    return state


def read_checkpoint(path: str | os.PathLike) -> dict:
    """``torch.load`` a trainer checkpoint onto the CPU (the random-generator states must stay
    there; the model, EMA and optimiser copy theirs to the model's device on loading); a file that
    cannot be read or holds no trainer state raises :class:`CheckpointError` naming it."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises several types for torn or foreign files
        size = path.stat().st_size if path.exists() else None
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(e).__name__}: {e}; {size} bytes): "
            "it is truncated, corrupt or not a sde_gen checkpoint"
        ) from e
    state = _upgrade(state) if isinstance(state, dict) else state
    missing = [k for k in CKPT_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} is not a sde_gen trainer checkpoint: it lacks {missing}")
    return state


def list_checkpoints(ckpt_dir: str | os.PathLike) -> list[Path]:
    """Checkpoints in ``ckpt_dir``, oldest first."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if CKPT_PATTERN.match(p.name))


class Checkpoints:
    """A folder of checkpoints ``ckpt_XXXXXXXX.pt``: written atomically every ``every`` steps (and
    by :meth:`save` whenever asked), the newest ``keep`` kept; :meth:`newest` finds the newest
    readable one, moving torn files aside.

    Under data parallelism every rank calls :meth:`save` (the state is gathered from all) and rank
    0 writes; every rank calls :meth:`newest`.
    """

    def __init__(self, directory: str | os.PathLike, every: int | None = None, keep: int = 3):
        self.dir = Path(directory)
        self.every = None if every is None else check_int("every", every, low=1)
        self.keep = check_int("keep", keep, low=1)

    def __repr__(self) -> str:
        return f"Checkpoints({str(self.dir)!r}, every={self.every}, keep={self.keep})"

    def due(self, step: int) -> bool:
        """Whether step ``step`` ends with a periodic checkpoint."""
        return self.every is not None and step % self.every == 0

    def path(self, step: int) -> Path:
        return self.dir / f"ckpt_{step:08d}.pt"

    def save(self, state: dict, step: int) -> Path:
        """Write ``state`` as step ``step``'s checkpoint (rank 0 only) and prune to ``keep``."""
        path = self.path(step)
        if dist.get_rank() == 0:
            save_atomic(state, path)
            for old in list_checkpoints(self.dir)[: -self.keep]:
                old.unlink(missing_ok=True)
        return path

    def newest(self, load: Callable[[dict, Path], None]) -> Path | None:
        """Call ``load(state, path)`` with the newest readable checkpoint and return its path, or
        ``None`` when there is none. Temporary files left by a save that was killed are deleted. A
        checkpoint that cannot be read (a torn or corrupt file) is renamed ``<name>.corrupt``, kept
        for inspection, and the next older one is tried, with a ``RuntimeWarning`` naming the file.
        Errors raised by ``load`` itself (e.g. another model's checkpoint) propagate."""
        if dist.get_rank() == 0 and self.dir.is_dir():
            # Half-written temporary files of a run killed while saving: never checkpoints.
            for tmp in self.dir.glob(".ckpt_*.pt.*.tmp"):
                tmp.unlink(missing_ok=True)
        for path in reversed(list_checkpoints(self.dir)):
            try:
                state = read_checkpoint(path)
            except CheckpointError as e:
                warnings.warn(
                    f"{e}; moved aside to {path.name}.corrupt, trying the previous one",
                    RuntimeWarning,
                    stacklevel=3,
                )
                dist.barrier()  # every rank has read it before rank 0 moves it
                if dist.get_rank() == 0 and path.exists():
                    path.rename(path.with_name(path.name + ".corrupt"))
                dist.barrier()
                continue
            load(state, path)
            return path
        return None
