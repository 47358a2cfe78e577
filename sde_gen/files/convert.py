"""Convert a trusted checkpoint that needs full unpickling into one that loads safely.

sde_gen reads checkpoints with ``torch.load(weights_only=True)``: tensors, numbers, strings and
containers, never code. A file written by an older version or another tool that holds other objects
(numpy arrays and scalars, most often) is refused. If you trust that file, convert it once::

    python -m sde_gen.files.convert OLD.pt NEW.pt [--yes]

This loads OLD with full unpickling, **which runs any code OLD contains** (so it asks first, unless
``--yes``), keeps what a trainer checkpoint holds (the keys :meth:`sde_gen.Trainer.state_dict`
writes), turns numpy arrays and scalars into tensors and numbers, refuses anything else, writes NEW
atomically and checks that NEW loads with ``weights_only=True``. OLD is never changed.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from .checkpoint import (
    TRAINER_KEYS,
    CheckpointError,
    UnsafeCheckpointError,
    check_trainer_state,
    load_weights_only,
    read_checkpoint,
    save_atomic,
)

__all__ = ["convert_checkpoint", "needs_unpickling", "main"]

_PLAIN = (bool, int, float, str, bytes, type(None), torch.dtype, torch.device, torch.Size)


def _convert(obj, where: str):
    """``obj`` made of what ``weights_only=True`` loads (tensors, numbers, strings, containers);
    numpy arrays become tensors and numpy scalars numbers. Anything else raises
    :class:`CheckpointError` naming ``where``, its place in the checkpoint."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().as_subclass(torch.Tensor)  # a Parameter or subclass: the plain tensor
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            return _convert(obj.tolist(), where)
        try:
            return torch.from_numpy(np.ascontiguousarray(obj)).clone()
        except TypeError as e:
            raise CheckpointError(f"cannot convert {where}: a numpy array of dtype {obj.dtype} ({e})") from e
    if isinstance(obj, np.generic):  # np.float64 is also a float: test it first
        return _convert(obj.item(), where)
    if type(obj) in _PLAIN:
        return obj
    for base in (bool, int, float, str):  # subclasses (enums, ...): the plain value
        if isinstance(obj, base):
            return base(obj)
    if isinstance(obj, dict):
        out = OrderedDict() if isinstance(obj, OrderedDict) else {}
        for k, v in obj.items():
            key = _convert(k, f"{where} key {k!r}")
            if not isinstance(key, (str, int, float, bool, type(None), tuple)):
                raise CheckpointError(f"cannot convert {where}: key {k!r} of type {type(k).__name__}")
            out[key] = _convert(v, f"{where}[{k!r}]")
        if hasattr(obj, "_metadata"):  # a module's state_dict: its version numbers
            out._metadata = _convert(obj._metadata, f"{where}._metadata")
        return out
    if isinstance(obj, (list, tuple)):
        items = [_convert(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    raise CheckpointError(
        f"cannot convert {where}: an object of type {type(obj).__module__}.{type(obj).__qualname__}, "
        "which a trainer checkpoint never holds"
    )


def needs_unpickling(path: str | Path) -> list[str] | None:
    """``None`` if ``path`` loads with ``weights_only=True``, else the classes and functions it
    refers to (empty when torch cannot disassemble it). Nothing in the file runs."""
    try:
        load_weights_only(path)
    except UnsafeCheckpointError as e:
        return e.refers
    except CheckpointError:
        return []
    return None


def convert_checkpoint(old: str | Path, new: str | Path) -> tuple[Path, list[str]]:
    """Load ``old`` (with full unpickling if it needs it: **this runs any code it contains**), keep
    the trainer's keys converted to safe types, write ``new`` atomically and check that it loads
    with ``weights_only=True``. Returns ``new`` and the keys dropped. Raises
    :class:`CheckpointError` (nothing is written) for a file that is not a trainer checkpoint or
    holds what cannot be converted."""
    old, new = Path(old), Path(new)
    if new.resolve() == old.resolve():
        raise CheckpointError(f"NEW must differ from OLD ({old}): OLD is kept until NEW is checked")
    try:
        state = load_weights_only(old)
    except CheckpointError:
        try:
            state = torch.load(old, map_location="cpu", weights_only=False)
        except Exception as e:
            raise CheckpointError(f"checkpoint {old} cannot be read ({type(e).__name__}: {e})") from e
    state = check_trainer_state(state, old)
    dropped = sorted(str(k) for k in state if k not in TRAINER_KEYS)
    safe = {k: _convert(state[k], f"{old}[{k!r}]") for k in TRAINER_KEYS if k in state}
    buf = io.BytesIO()  # check before writing: NEW is only written if it will load safely
    torch.save(safe, buf)
    buf.seek(0)
    try:
        torch.load(buf, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"checkpoint {old} converted still does not load safely: {e}") from e
    save_atomic(safe, new)
    read_checkpoint(new)
    return new, dropped


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sde_gen.files.convert",
        description="Convert a TRUSTED checkpoint that sde_gen refuses (it needs full unpickling) into one "
        "that loads with torch.load(weights_only=True). Loading OLD runs any code it contains: only "
        "convert files you or someone you trust wrote.",
    )
    p.add_argument("old", metavar="OLD", help="the checkpoint to convert (never changed)")
    p.add_argument("new", metavar="NEW", help="where to write the converted checkpoint")
    p.add_argument("--yes", action="store_true", help="do not ask before loading OLD with full unpickling")
    return p


def _confirm(old: Path, refers: list[str]) -> bool:
    """Warn that loading ``old`` runs its code; ``True`` only if a person at a terminal says yes."""
    what = ", ".join(refers) if refers else "(torch cannot list it without running it)"
    print(
        f"WARNING: loading {old} with full unpickling runs any code it contains. It refers to: {what}.\n"
        "Continue only if you or someone you trust wrote this file.",
        file=sys.stderr,
    )
    if not sys.stdin.isatty():
        print("not asking: stdin is not a terminal; pass --yes to convert", file=sys.stderr)
        return False
    print("Load it with full unpickling? [y/N] ", end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    old, new = Path(args.old), Path(args.new)
    prog = "convert_checkpoint"
    if not old.is_file():
        print(f"{prog}: {old} is not a file", file=sys.stderr)
        return 1
    refers = needs_unpickling(old)
    if refers is not None and not args.yes and not _confirm(old, refers):
        print(f"{prog}: not converted; nothing written", file=sys.stderr)
        return 1
    try:
        _, dropped = convert_checkpoint(old, new)
    except CheckpointError as e:
        print(f"{prog}: {e}; nothing written", file=sys.stderr)
        return 1
    if dropped:
        print(f"{prog}: dropped keys a trainer checkpoint does not hold: {dropped}", file=sys.stderr)
    print(f"{prog}: wrote {new}; it loads with torch.load(weights_only=True)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
