"""Checkpoint files: atomic writes, rotation, reading with clear errors, recovery from torn files.

Checkpoints are read with ``torch.load(..., weights_only=True)`` only: tensors, numbers, strings and
containers, never code. A file that needs full unpickling raises :class:`UnsafeCheckpointError`; a
file the user trusts is converted once with ``python -m sde_gen.files.convert OLD.pt NEW.pt``.
"""

from __future__ import annotations

import contextlib
import os
import pickle
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
    "UnsafeCheckpointError",
    "Checkpoints",
    "save_atomic",
    "read_checkpoint",
    "list_checkpoints",
    "CKPT_PATTERN",
    "MAX_STEPS",
]

CKPT_PATTERN = re.compile(r"^ckpt_(\d{8})\.pt$")
#: The most steps a run may take: checkpoint names hold the step in 8 digits.
MAX_STEPS = 10**8 - 1

#: What every trainer checkpoint holds (``read_checkpoint`` refuses a file without them).
CKPT_KEYS = ("step", "model", "ema", "optimizer", "data", "noise_gen")
#: Every key :meth:`Trainer.state_dict <sde_gen.Trainer.state_dict>` writes (what
#: ``python -m sde_gen.files.convert`` keeps of an old file).
TRAINER_KEYS = CKPT_KEYS + (
    "torch_rng",
    "torch_rng_ranks",
    "seed",
    "skipped",
    "skips_in_a_row",
    "world_size",
)
#: How a user converts a checkpoint they trust into one that loads safely.
CONVERT_COMMAND = "python -m sde_gen.files.convert"
_WEIGHTS_ONLY = "Weights only load failed"  # how torch's refusals under weights_only=True begin


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: unreadable (truncated, corrupt, not a checkpoint) or written
    for another model. The message names the file."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint that holds objects only full unpickling can rebuild (a class or function of
    another library, or code). Full unpickling runs any code a file contains, so sde_gen never does
    it; the message names the file, what it refers to, and the command that converts a trusted file.
    :meth:`Checkpoints.newest` raises it instead of passing over the file. ``refers``: the names of
    those classes and functions (``module.name``), as far as they can be found without running it."""

    def __init__(self, message: str, refers: list[str] | tuple[str, ...] = ()):
        super().__init__(message)
        self.refers = list(refers)


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
    """A checkpoint of sde_gen 0.1 in the current layout: the data order moves under ``"data"``,
    and an EMA without warm-up fields gets ``warmup=False`` and one update per step."""
    if "data" not in state and {"data_gen", "perm", "pos"} <= set(state):
        state = dict(state)
        state["data"] = {
            "generator": state.pop("data_gen"),
            "perm": state.pop("perm"),
            "pos": state.pop("pos"),
        }
    ema = state.get("ema")
    if isinstance(ema, dict) and "num_updates" not in ema and "step" in state:
        state = {**state, "ema": {**ema, "warmup": False, "num_updates": state["step"]}}
    return state


def _foreign_globals(path: Path, err: Exception) -> list[str] | None:
    """What made ``torch.load(weights_only=True)`` refuse ``path`` if it is a well-formed file that
    needs full unpickling: the classes and functions it refers to. ``None`` when ``err`` is another
    failure (a torn or garbage file). Found statically (the pickle is disassembled, never run)."""
    if not isinstance(err, pickle.UnpicklingError) or _WEIGHTS_ONLY not in str(err):
        return None  # torn zip archives, EOFError, ...: never the weights-only check
    names: list[str] = []
    scan = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)  # torch >= 2.5
    if scan is not None:
        with contextlib.suppress(Exception):  # legacy (non-zip) format, unreadable pickle
            names = sorted(scan(path))
    if not names:  # torch < 2.5 or the legacy format: torch's message names the first one
        names = re.findall(r"(?:GLOBAL|Unsupported class) ([\w.]+)", str(err))[:1]
    return names or None


def _reason(err: Exception) -> str:
    """torch's error in one line, without its advice to load with ``weights_only=False``."""
    msg = str(err)
    if msg.startswith(_WEIGHTS_ONLY):
        lines = [ln.strip() for ln in msg.split("Check the documentation")[0].splitlines() if ln.strip()]
        msg = lines[-1].split("WeightsUnpickler error:")[-1].strip() if lines else ""
    return " ".join(msg.split())


def load_weights_only(path: str | os.PathLike):
    """``torch.load(path, map_location="cpu", weights_only=True)``: tensors, numbers, strings and
    containers, never code. A file that needs full unpickling raises :class:`UnsafeCheckpointError`,
    any other unreadable file :class:`CheckpointError`; both name the file."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for torn or foreign files
        foreign = _foreign_globals(path, e)
        if foreign is not None:
            raise UnsafeCheckpointError(
                f"checkpoint {path} cannot be read safely: it refers to {', '.join(foreign)}, which only "
                "full unpickling can rebuild, and that runs any code the file contains. sde_gen never "
                f"unpickles code from a file. If you trust this file, convert it once: {CONVERT_COMMAND} "
                f"{path} NEW.pt",
                refers=foreign,
            ) from None
        size = path.stat().st_size if path.exists() else None
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(e).__name__}: {_reason(e)}; {size} bytes): "
            "it is truncated, corrupt or not a sde_gen checkpoint"
        ) from (None if _WEIGHTS_ONLY in str(e) else e)  # torch's advice to unpickle: not for this file


def check_trainer_state(state, path: str | os.PathLike) -> dict:
    """``state`` in the current layout (sde_gen 0.1's data order moved under ``"data"``), or
    :class:`CheckpointError` if it is not a trainer checkpoint."""
    state = _upgrade(state) if isinstance(state, dict) else state
    missing = [k for k in CKPT_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} is not a sde_gen trainer checkpoint: it lacks {missing}")
    return state


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Read a trainer checkpoint onto the CPU (the random-generator states must stay there; the
    model, EMA and optimiser copy theirs to the model's device on loading) with
    ``torch.load(weights_only=True)``: no code in the file ever runs. A file that needs full
    unpickling raises :class:`UnsafeCheckpointError`; a file that cannot be read or holds no trainer
    state raises :class:`CheckpointError`. Both name the file."""
    return check_trainer_state(load_weights_only(path), path)


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
        A checkpoint that needs full unpickling is no torn file: :class:`UnsafeCheckpointError`
        propagates and the file stays where it is (a run never silently falls back past a file that
        someone wrote, or that needs converting). Errors raised by ``load`` itself (e.g. another
        model's checkpoint) propagate."""
        if dist.get_rank() == 0 and self.dir.is_dir():
            # Half-written temporary files of a run killed while saving: never checkpoints.
            for tmp in self.dir.glob(".ckpt_*.pt.*.tmp"):
                tmp.unlink(missing_ok=True)
        for path in reversed(list_checkpoints(self.dir)):
            try:
                state = read_checkpoint(path)
            except UnsafeCheckpointError:
                raise
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
