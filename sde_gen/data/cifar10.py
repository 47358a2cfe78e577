"""CIFAR-10 from its python pickle batches (Krizhevsky 2009), read as untrusted files.

A batch is at most ``CIFAR_MAX_BYTES``; its pickle opcodes are walked before anything is
unpickled (claimed lengths must fit the bytes that follow, memo indices stay small, at most
``PICKLE_MAX_OPS`` opcodes), the unpickler allows only stand-ins that check their arguments, and
numpy arrays are built only from bytes the file holds (docs/security.md).
"""

from __future__ import annotations

import io
import math
import os
import pickle
import pickletools
from pathlib import Path

import numpy as np
import torch

from .images import ImageData, default_root

# -- CIFAR-10 python pickles ---------------------------------------------------------------------------

CIFAR10_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
_CIFAR_HELP = (
    "Get cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and extract it "
    "(torchvision.datasets.CIFAR10(root, download=True) does the same)."
)
#: The largest CIFAR-10 batch file read, 128 MiB (each real one holds 31 MB); a larger one is
#: refused before it is read.
CIFAR_MAX_BYTES = 2**27
#: The most pickle opcodes a batch may hold (a real one has about 9 x 10^4): bounds the time the
#: check takes and the unpickler's stack and memo, whatever the file holds.
PICKLE_MAX_OPS = 2**19
_DTYPE_CODES = frozenset({"b1", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f2", "f4", "f8"})


def _text(x):
    return x.decode("latin1") if isinstance(x, bytes) else x


class _Dtype:
    """Stands in for ``numpy.dtype(code, align, copy)`` in a batch: a plain numeric type only."""

    def __init__(self, code, align=False, copy=False):
        code = _text(code)
        if not isinstance(code, str) or code not in _DTYPE_CODES:
            raise pickle.UnpicklingError(f"numpy dtype {code!r:.40} is not allowed in a CIFAR-10 batch")
        self.dtype = np.dtype(code)

    def __setstate__(self, state):
        # (version, byte order, subarray, names, fields, elsize, alignment, flags[, metadata])
        if not isinstance(state, tuple) or len(state) < 5 or any(v is not None for v in state[2:5]):
            raise pickle.UnpicklingError("a numpy dtype with a structure is not allowed in a CIFAR-10 batch")
        order = _text(state[1])
        if order not in ("<", ">", "=", "|"):
            raise pickle.UnpicklingError(f"numpy dtype byte order {order!r:.20} is not one of < > = |")
        if order in ("<", ">"):
            self.dtype = self.dtype.newbyteorder(order)


def _array_from(buf, dtype, shape, order) -> np.ndarray:
    """``numpy.frombuffer(buf, dtype).reshape(shape, order)`` once ``shape`` x itemsize is checked
    to equal ``len(buf)``: an array is never larger than the bytes the file holds for it."""
    if not isinstance(dtype, _Dtype):
        raise pickle.UnpicklingError(f"an array's dtype must be a numpy dtype, got {type(dtype).__name__}")
    if not isinstance(buf, (bytes, bytearray)):
        raise pickle.UnpicklingError(f"an array's data must be bytes, got {type(buf).__name__}")
    if not (isinstance(shape, tuple) and len(shape) <= 32 and all(type(n) is int and n >= 0 for n in shape)):
        raise pickle.UnpicklingError(f"an array's shape must be a tuple of sizes, got {shape!r:.80}")
    if order not in ("C", "F"):
        raise pickle.UnpicklingError(f"an array's order must be C or F, got {order!r:.20}")
    need = math.prod(shape) * dtype.dtype.itemsize
    if need != len(buf):
        raise pickle.UnpicklingError(
            f"an array of shape {shape} and dtype {dtype.dtype} needs {need} bytes, the file holds {len(buf)}"
        )
    return np.frombuffer(buf, dtype.dtype).reshape(shape, order=order)


class _Array:
    """Stands in for ``numpy.core.multiarray._reconstruct(ndarray, (0,), b'b')``: its state
    ``(version, shape, dtype, is_fortran, data)`` becomes ``array`` through :func:`_array_from`."""

    array = None

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 5:
            state = state[1:]
        if not (isinstance(state, tuple) and len(state) == 4):
            raise pickle.UnpicklingError("a numpy array with an unexpected state")
        shape, dtype, fortran, data = state
        self.array = _array_from(data, dtype, shape, "F" if fortran else "C")


_NDARRAY = object()  # numpy.ndarray as _reconstruct's first argument; never called


def _reconstruct(subtype, shape, code):
    if subtype is not _NDARRAY or shape != (0,):
        raise pickle.UnpicklingError("numpy _reconstruct with other arguments than numpy writes")
    return _Array()


def _scalar(dtype, data):
    if not isinstance(dtype, _Dtype) or not isinstance(data, bytes) or len(data) != dtype.dtype.itemsize:
        raise pickle.UnpicklingError("a numpy scalar with other arguments than numpy writes")
    return np.frombuffer(data, dtype.dtype)[0]


def _latin1(obj, encoding="utf-8", errors="strict"):
    """``_codecs.encode(str, 'latin1')``, how protocol-2 pickles written by Python 3 hold bytes."""
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise pickle.UnpicklingError("_codecs.encode other than (str, 'latin1') is not allowed")
    return obj.encode("latin1")


def _empty_bytes(*args):
    """``bytes()``, how protocol-2 pickles written by Python 3 hold ``b''`` (and nothing else)."""
    if args:
        raise pickle.UnpicklingError("bytes() with arguments is not allowed in a CIFAR-10 batch")
    return b""


_SAFE_GLOBALS = {
    ("__builtin__", "bytes"): _empty_bytes,
    ("builtins", "bytes"): _empty_bytes,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _Dtype,
    ("_codecs", "encode"): _latin1,
}
for _core in ("numpy.core", "numpy._core"):  # numpy >= 2 renamed numpy.core
    _SAFE_GLOBALS[(f"{_core}.multiarray", "_reconstruct")] = _reconstruct
    _SAFE_GLOBALS[(f"{_core}.multiarray", "scalar")] = _scalar
    _SAFE_GLOBALS[(f"{_core}.numeric", "_frombuffer")] = _array_from


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only, and never runs numpy's own unpickling
    code: the allowed globals are stand-ins that check what they are given, and an array is made by
    ``numpy.frombuffer`` from bytes the file holds. A pickle cannot run other code."""

    def find_class(self, module, name):
        try:
            return _SAFE_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            raise pickle.UnpicklingError(
                f"global {module!s:.60}.{name!s:.60} is not allowed in a CIFAR-10 batch"
            ) from None


def _check_pickle(raw: bytes, path: Path) -> None:
    """Walk the opcodes with ``pickletools.genops`` (which builds nothing) before unpickling. The C
    unpickler allocates a length an opcode claims before reading it (``BINBYTES8`` of 2^40) and
    sizes its memo by the largest index put (``LONG_BINPUT`` of 2^32 zeroes 64 GB), so: every
    claimed length must fit in the bytes that follow (genops checks), no memo index may exceed the
    number of opcodes before it (picklers number objects from 0, Python 2's cPickle from 1), and
    there are at most ``PICKLE_MAX_OPS`` opcodes."""
    try:
        for count, (op, arg, pos) in enumerate(pickletools.genops(raw)):
            if count >= PICKLE_MAX_OPS:
                raise ValueError(f"more than {PICKLE_MAX_OPS} opcodes")
            if op.name in ("PUT", "BINPUT", "LONG_BINPUT") and not 0 <= arg <= count:
                raise ValueError(f"memo index {arg} at byte {pos}, after only {count} opcodes")
    except Exception as e:  # genops raises ValueError for a bad opcode or a length past the end
        raise ValueError(f"{path}: not a CIFAR-10 python batch (corrupt pickle: {str(e):.200})") from e


def _unwrap(x):
    if isinstance(x, _Array):
        if x.array is None:
            raise ValueError("a numpy array without its data")
        return x.array
    return x


def _describe(x) -> str:
    return f"{x.dtype} array of shape {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__


def _read_cifar_batch(path: Path, *, max_bytes: int = CIFAR_MAX_BYTES):
    """One CIFAR-10 batch: ``(N, 3, 32, 32)`` uint8 images and ``(N,)`` int64 labels in 0..9.

    The file is untrusted: it is refused if larger than ``max_bytes``; its opcodes are checked by
    :func:`_check_pickle`; then it is unpickled with numpy stand-ins only (:class:`_ArrayUnpickler`).
    Any failure raises ``ValueError`` naming the file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            raw = f.read(size + 1) if size <= max_bytes else b""  # read(n) allocates n at once
    except OSError as e:
        raise ValueError(f"{path}: cannot read the file ({e})") from e
    if size > max_bytes or len(raw) > max_bytes:
        raise ValueError(
            f"{path}: {max(size, len(raw))} bytes, over the limit of {max_bytes} for a CIFAR-10 batch "
            "(each real one holds 31 MB); it is not a CIFAR-10 python batch"
        )
    _check_pickle(raw, path)
    try:
        batch = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as e:  # only the stand-ins above run: any failure is a corrupt or foreign file
        raise ValueError(f"{path}: not a CIFAR-10 python batch ({type(e).__name__}: {str(e):.200})") from e
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: expected a dict with b'data' and b'labels', got {type(batch).__name__}")
    batch = {_text(k): v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        keys = sorted(k[:40] if isinstance(k, str) else repr(k)[:40] for k in batch)
        raise ValueError(
            f"{path}: expected keys b'data' and b'labels', found {keys[:8]}{' ...' if len(keys) > 8 else ''}"
        )
    try:
        data, labels = _unwrap(batch["data"]), _unwrap(batch["labels"])
    except ValueError as e:
        raise ValueError(f"{path}: not a CIFAR-10 python batch ({e})") from None
    if not (
        isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072
    ):
        raise ValueError(f"{path}: b'data' must be a uint8 array of shape (N, 3072), got {_describe(data)}")
    n = data.shape[0]
    if n == 0:
        raise ValueError(f"{path}: b'data' holds no images (shape {data.shape})")
    if isinstance(labels, (list, tuple)):
        if len(labels) != n:
            raise ValueError(f"{path}: {n} images but {len(labels)} labels in b'labels'")
        for i, v in enumerate(labels):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v <= 9:
                raise ValueError(f"{path}: labels must be integers 0..9, found {v!r:.40} at index {i}")
        labels = np.asarray(labels, dtype=np.int64)
    elif isinstance(labels, np.ndarray) and labels.dtype.kind in "iu":
        if labels.shape != (n,):
            raise ValueError(f"{path}: {n} images but b'labels' has shape {labels.shape}")
        if labels.min() < 0 or labels.max() > 9:
            raise ValueError(f"{path}: labels must be 0..9, found {labels.min()}..{labels.max()}")
    else:
        raise ValueError(f"{path}: b'labels' must be a list or an integer array, got {_describe(labels)}")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def load_cifar10(root=None) -> ImageData:
    """CIFAR-10 from ``root/cifar-10-batches-py`` or ``root`` itself (default ``$SDE_GEN_DATA`` or
    ``./data``): data_batch_1..5 (50,000 train) and test_batch (10,000), 3x32x32, 256 levels.
    Each batch is untrusted: at most ``CIFAR_MAX_BYTES``, its pickle opcodes checked before it is
    unpickled, numpy arrays the only objects it may build (see ``_read_cifar_batch``); a bad file
    raises ``ValueError`` naming it."""
    root = default_root(root)
    dirs = [root] if root.name == "cifar-10-batches-py" else [root / "cifar-10-batches-py", root]
    names = list(CIFAR10_FILES)
    d = None
    for cand in dirs:  # .gz is not part of the CIFAR distribution: plain files only
        if all((cand / n).is_file() for n in names):
            d = cand
            break
    if d is None:
        raise FileNotFoundError(
            f"CIFAR-10: expected the files {', '.join(names)} in one of: "
            f"{', '.join(str(c) for c in dirs)}. {_CIFAR_HELP}"
        )
    parts = [_read_cifar_batch(d / n) for n in names]
    train_x = np.concatenate([p[0] for p in parts[:5]])
    train_y = np.concatenate([p[1] for p in parts[:5]])
    test_x, test_y = parts[5]
    return ImageData(
        torch.from_numpy(train_x),
        torch.from_numpy(np.array(test_x)),
        256,
        "cifar10",
        torch.from_numpy(train_y),
        torch.from_numpy(test_y),
    )
